"""The plan cache (emulator/plan_store.py): a plan loaded from the cache is the compiled plan.

Real converted packages (a small CNN at fp32 and fp16, a palettized one whose constexpr ops
fold into constants, a TF while_loop) under several executions: the loaded plan equals the
compiled one field by field (shared steps shared alike), predictions and captured
intermediates are bit-identical, placements equal. A warm cache serves a fresh process
without coremltools, TensorFlow or Keras; a bad entry is recompiled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")
ct = pytest.importorskip("coremltools")

import _emu_helpers as H
from precision_sweep.emulator import Emulator, Execution
from precision_sweep.emulator import plan_store
from precision_sweep.emulator.ops.control_flow import TensorList

EXECUTIONS = [
    Execution("cpu_only", "m1"),
    Execution("cpu_and_gpu", "m1"),
    Execution("all", "m1"),
    Execution("all", "m5"),
    Execution("cpu_and_gpu", "m5", gpu_low_precision_accumulation=True),
]
_PACKAGES: dict = {}


def _cnn(precision):
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        L.ZeroPadding2D(1),  # a zero pad the lean steps fold into the conv
        L.Conv2D(8, 3, activation="relu"),
        L.DepthwiseConv2D(3, padding="same"),
        L.BatchNormalization(),
        L.MaxPooling2D(),
        L.Conv2D(8, 3, padding="same", activation="swish"),
        L.AveragePooling2D(2),
        L.Flatten(),
        L.Dense(16, activation="tanh"),
        L.Dense(10, activation="softmax"),
    ])
    return H.convert(model, [(2, 12, 12, 3)], precision=precision)


def _palettized():
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=0))
    return cto.palettize_weights(_cnn("fp16"), config)


def _while_loop():
    import tensorflow as tf

    H.quiet()

    @tf.function(input_signature=[tf.TensorSpec((2, 3), tf.float32, name="x")])
    def doubling(x):
        def body(i, acc):
            return i + 1, acc * 1.5 + tf.cast(i, tf.float32)

        return tf.while_loop(lambda i, acc: i < 4, body, [tf.constant(0), x])[1]

    return ct.convert([doubling.get_concrete_function()], source="tensorflow", convert_to="mlprogram",
                      minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT16)


def _flexible_batch():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    @mb.program(input_specs=[mb.TensorSpec(shape=(get_new_symbol(), 3))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.relu(x=mb.mul(x=x, y=np.float32(2.0)), name="y")

    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                      compute_precision=ct.precision.FLOAT32)


BUILDERS = {"cnn_fp32": lambda: _cnn("fp32"), "cnn_fp16": lambda: _cnn("fp16"), "palettized": _palettized,
            "while_loop": _while_loop, "flexible_batch": _flexible_batch}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    def get(name):
        if name not in _PACKAGES:
            path = tmp_path_factory.mktemp("packages") / f"{name}.mlpackage"
            BUILDERS[name]().save(str(path))
            _PACKAGES[name] = path
        return _PACKAGES[name]

    return get


def _feeds(emulator):
    rng = np.random.default_rng(0)
    def sized(shape):  # an open dimension (a flexible batch) gets 2
        return tuple(d if isinstance(d, int) else 2 for d in shape)

    return {name: (rng.standard_normal(sized(shape)) * 3).astype(np.float32) for name, (shape, _) in emulator.plan.inputs.items()}


# --- deep equality of plans ------------------------------------------------------------------


def _same_value(a, b, where):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.tobytes() == b.tobytes(), where
        assert a.flags.writeable == b.flags.writeable, where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_value(x, y, f"{where}[{i}]")
    elif isinstance(a, TensorList):
        _same_value(a.elements, b.elements, where)
        assert (a.elem_shape, a.dtype, a.dynamic_length) == (b.elem_shape, b.dtype, b.dynamic_length), where
    else:
        assert a == b, where


def _same_step(a, b, models):
    where = f"step {a.name}"
    assert (a.op_type, a.name, a.var_kwargs, a.coerce, a.reuses) == (b.op_type, b.name, b.var_kwargs, b.coerce, b.reuses), where
    assert a.fn is b.fn, where
    assert list(a.const_kwargs) == list(b.const_kwargs), where
    for key in a.const_kwargs:
        _same_value(a.const_kwargs[key], b.const_kwargs[key], f"{where}.{key}")
    assert a.outputs == b.outputs and all(isinstance(d, np.dtype) for _, d in b.outputs), where
    assert a.placement == b.placement, where
    if b.placement is not None:
        assert any(b.placement.model is m for m in (models.ane, models.fallback, models.cpu)), where
    assert a.accumulator == b.accumulator, where
    assert list(a.blocks) == list(b.blocks), where
    for arg in a.blocks:
        x, y = a.blocks[arg], b.blocks[arg]
        assert (x.inputs, x.outputs) == (y.inputs, y.outputs), where
        assert len(x.steps) == len(y.steps), where
        for s, t in zip(x.steps, y.steps):
            _same_step(s, t, models)


def assert_same_plan(a, b, models):
    assert a.inputs == b.inputs and a.outputs == b.outputs and a.producers == b.producers
    assert a.spec_version == b.spec_version
    assert list(a.constants) == list(b.constants)
    for name in a.constants:
        _same_value(a.constants[name], b.constants[name], name)
    for steps_a, steps_b in ((a.steps, b.steps), (a.lean_steps, b.lean_steps)):
        assert len(steps_a) == len(steps_b)
        for s, t in zip(steps_a, steps_b):
            _same_step(s, t, models)
    # A lean step is the very object of its top-level step exactly where the compiled one is.
    shared = lambda plan: [next((i for i, s in enumerate(plan.steps) if s is lean), None) for lean in plan.lean_steps]
    assert shared(a) == shared(b)
    assert a.releases == b.releases


def _same_outputs(a, b):
    assert list(a) == list(b)
    for name in a:
        _same_value(np.asarray(a[name]), np.asarray(b[name]), name)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("execution", EXECUTIONS, ids=lambda e: f"{e.compute_units}-{e.device}"
                         + ("-lpa" if e.gpu_low_precision_accumulation else ""))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_loaded_plan_is_the_compiled_plan(name, execution, package, tmp_path):
    path = package(name)
    plain = execution.emulator(path)
    compiled = execution.emulator(path, plan_cache=tmp_path)  # compiles and stores
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and (entries[0] / plan_store.PLAN_FILE).is_file()
    loaded = execution.emulator(path, plan_cache=tmp_path)
    assert_same_plan(compiled.plan, loaded.plan, loaded.models)
    # coremltools' loader names a constexpr op's inline constants with a process-wide counter,
    # so two compiles in one process may name those constants differently; everything the
    # plan executes is the same.
    assert [s.name for s in plain.plan.all_steps()] == [s.name for s in loaded.plan.all_steps()]
    assert plain.placements() == loaded.placements()
    feeds = _feeds(plain)
    _same_outputs(plain.predict(feeds), loaded.predict(feeds))

    assert loaded.spec_version == compiled.spec_version is not None
    assert (loaded.input_names, loaded.output_names) == (compiled.input_names, compiled.output_names)
    assert loaded.op_types() == compiled.op_types()
    assert loaded.placements() == compiled.placements()
    assert loaded.placement_fractions() == compiled.placement_fractions()
    if name == "palettized":
        assert not any(t.startswith("constexpr_") for t in loaded.op_types())  # folded into constants
    if name == "while_loop":
        assert "while_loop" in loaded.op_types()

    _same_outputs(compiled.predict(feeds), loaded.predict(feeds))
    want_out, want = compiled.predict(feeds, capture=True)
    got_out, got = loaded.predict(feeds, capture=True)
    _same_outputs(want_out, got_out)
    assert list(want) == list(got)
    for key in want:
        assert want[key][0] == got[key][0]
        _same_value(np.asarray(want[key][1]), np.asarray(got[key][1]), key)
    # The run after a capture run still gives the same bits (no state kept in the plan).
    _same_outputs(compiled.predict(feeds), loaded.predict(feeds))


def test_a_flexible_dimension_is_plain_data_in_both_plans(package, tmp_path):
    """A program's open batch dimension is a FlexibleDim in the compiled and in the loaded plan;
    a warm process reading it imports no sympy (0.5 s)."""
    from precision_sweep.emulator.plan import FlexibleDim

    path = package("flexible_batch")
    compiled = Emulator(path, "all", "m1", plan_cache=tmp_path)
    loaded = Emulator(path, "all", "m1", plan_cache=tmp_path)
    ((name, (shape, _)),) = compiled.plan.inputs.items()
    assert isinstance(shape[0], FlexibleDim) and shape[1] == 3
    assert loaded.plan.inputs == compiled.plan.inputs
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from precision_sweep.emulator import Emulator
        out = Emulator({str(path)!r}, "all", "m1", plan_cache={str(tmp_path)!r}).predict({{{name!r}: -np.ones((5, 3), np.float32)}})
        print(sorted(m for m in ("sympy", "coremltools") if m in sys.modules), float(np.abs(out["y"]).sum()))
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[] 0.0"


def test_the_key_follows_package_and_execution(package, tmp_path):
    from precision_sweep.emulator.numerics import unit_models

    path = package("cnn_fp16")
    keys = {plan_store.plan_key(path, unit_models(e.compute_units, e.device, e.gpu_low_precision_accumulation))
            for e in EXECUTIONS}
    assert len(keys) == len(EXECUTIONS)
    models = unit_models("all", "m5")
    assert plan_store.plan_key(path, models) == plan_store.plan_key(path, models)
    assert plan_store.plan_key(path, models, "other") != plan_store.plan_key(path, models)
    assert plan_store.plan_key(package("cnn_fp32"), models) != plan_store.plan_key(path, models)


def test_a_warm_cache_needs_no_coremltools_tensorflow_or_keras(package, tmp_path):
    path = package("cnn_fp16")
    warm = Emulator(path, "all", "m5", plan_cache=tmp_path)
    x = _feeds(warm)["input_0"]
    np.save(tmp_path.parent / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from precision_sweep.emulator import Emulator
        emulator = Emulator({str(path)!r}, "all", "m5", plan_cache={str(tmp_path)!r})
        out = emulator.predict({{"input_0": np.load({str(tmp_path.parent / "x.npy")!r})}})
        heavy = sorted(m for m in ("coremltools", "tensorflow", "keras", "tf_keras") if m in sys.modules)
        print(repr(heavy))
        np.savez({str(tmp_path.parent / "out.npz")!r}, **out)
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
    with np.load(tmp_path.parent / "out.npz") as got:
        _same_outputs(warm.predict({"input_0": x}), {k: got[k] for k in got.files})


def _corrupt_json(entry, change):
    document = json.loads((entry / plan_store.PLAN_FILE).read_text())
    change(document)
    (entry / plan_store.PLAN_FILE).write_text(json.dumps(document))


CORRUPTIONS = {
    "not_json": lambda e: (e / plan_store.PLAN_FILE).write_text("{not json"),
    "other_format": lambda e: _corrupt_json(e, lambda d: d.update(format=plan_store.PLAN_FORMAT + 1)),
    "missing_field": lambda e: _corrupt_json(e, lambda d: d["steps"][0].pop("placement")),
    "unknown_op": lambda e: _corrupt_json(e, lambda d: d["steps"][0].update(op_type="os.system")),
    "foreign_unit_model": lambda e: _corrupt_json(e, lambda d: d["unit_models"][0].update(device="m9")),
    "foreign_accumulation": lambda e: _corrupt_json(e, lambda d: d["steps"][0]["accumulator"].update(kind="fp8")),
    "lean_step_out_of_range": lambda e: _corrupt_json(e, lambda d: d["lean_steps"].append({"step": -1})),
    "truncated_arrays": lambda e: (e / plan_store.ARRAYS_FILE).write_bytes((e / plan_store.ARRAYS_FILE).read_bytes()[:100]),
    "pickled_array": lambda e: np.savez(e / plan_store.ARRAYS_FILE, a0=np.array([{"x": 1}], dtype=object)),
    "no_arrays": lambda e: (e / plan_store.ARRAYS_FILE).unlink(),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_bad_entry_is_recompiled(corruption, package, tmp_path):
    path = package("cnn_fp16")
    compiled = Emulator(path, "all", "m1", plan_cache=tmp_path)
    (entry,) = tmp_path.iterdir()
    CORRUPTIONS[corruption](entry)
    with pytest.raises(plan_store.PlanStoreError):
        plan_store.load_plan(entry, compiled.models)
    again = Emulator(path, "all", "m1", plan_cache=tmp_path)
    assert_same_plan(compiled.plan, again.plan, again.models)
    assert_same_plan(compiled.plan, plan_store.load_plan(entry, again.models), again.models)  # rewritten
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no leftovers


def test_an_entry_of_another_execution_is_refused(package, tmp_path):
    from precision_sweep.emulator.numerics import unit_models

    compiled = Emulator(package("cnn_fp16"), "cpu_only", "m1")
    plan_store.save_plan(compiled.plan, tmp_path / "entry", about=plan_store.key_fields(compiled.models, "main"))
    with pytest.raises(plan_store.PlanStoreError):
        plan_store.load_plan(tmp_path / "entry", unit_models("all", "m1"))


def test_a_writer_losing_the_race_keeps_the_winners_entry(package, tmp_path):
    compiled = Emulator(package("cnn_fp32"), "cpu_only", "m1")
    entry = tmp_path / "entry"
    assert plan_store.save_plan(compiled.plan, entry)
    before = (entry / plan_store.PLAN_FILE).stat().st_mtime_ns
    assert not plan_store.save_plan(compiled.plan, entry)
    assert (entry / plan_store.PLAN_FILE).stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_mlmodel_and_missing_package(package, tmp_path):
    ml = ct.models.MLModel(str(package("cnn_fp32")), skip_model_load=True)
    Emulator(ml, "cpu_only", plan_cache=tmp_path)  # an MLModel has no path to key: not cached
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError):
        Emulator(tmp_path / "absent.mlpackage", plan_cache=tmp_path)
