"""Conversion caches: the stored frontend program converts exactly like the original, in this
process and in a fresh one, loading an entry runs nothing, concurrent processes sharing a cache
directory compute every entry once, and a failing coremltools pass is named."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sweep_testing import compose


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return path


def _loaded(path):
    import keras

    from precision_sweep.data.models import LoadedModel, _content_hash

    model = keras.models.load_model(path)
    return LoadedModel("tiny", model, "image", (8, 8, 1), "probabilities", _content_hash(model))


def _spec(program, compute, target="iOS17"):
    import copy

    import coremltools as ct

    return ct.convert(copy.deepcopy(program), convert_to="mlprogram", compute_precision=compute.coremltools_value(),
                      minimum_deployment_target=getattr(ct.target, target), skip_model_load=True).get_spec()


def test_stored_frontend_program_converts_identically(tiny, tmp_path):
    from precision_sweep.convert.converter import frontend_program
    from precision_sweep.convert.program_store import load_program, save_program
    from precision_sweep.convert.recipes import ComputeSpec

    program = frontend_program(_loaded(tiny), "iOS17", ComputeSpec("float16"), 64)
    save_program(program, tmp_path / "entry")
    assert sorted(p.name for p in (tmp_path / "entry").rglob("*") if p.is_file()) == ["io.json", "program.milproto", "weight.bin"]
    restored = load_program(tmp_path / "entry")
    for compute in (ComputeSpec("float16"), ComputeSpec("float16", ("softmax",)), ComputeSpec("float32")):
        specs = [_spec(p, compute) for p in (program, restored)]
        assert specs[0].mlProgram == specs[1].mlProgram
        assert specs[0].description == specs[1].description


FRESH_LOADER = textwrap.dedent(
    """
    import copy
    import coremltools as ct
    from precision_sweep.convert.program_store import load_program
    from precision_sweep.convert.recipes import ComputeSpec
    program = load_program({entry!r})
    for name, compute in (("fp16", ComputeSpec("float16")), ("mixed", ComputeSpec("float16", ("softmax",)))):
        spec = ct.convert(copy.deepcopy(program), convert_to="mlprogram", compute_precision=compute.coremltools_value(),
                          minimum_deployment_target=ct.target.iOS17, skip_model_load=True).get_spec()
        open({out!r} + name, "wb").write(spec.SerializeToString())
    """
)


@pytest.mark.slow
def test_a_fresh_process_converts_the_stored_program_at_every_compute_precision(tiny, tmp_path):
    # The bug of issue 16: a program read back from the cache in a process that had not built
    # any op of its kinds failed coremltools' const_elimination pass ("type domain []").
    from coremltools import proto

    from precision_sweep.convert.converter import frontend_program
    from precision_sweep.convert.program_store import save_program
    from precision_sweep.convert.recipes import ComputeSpec

    program = frontend_program(_loaded(tiny), "iOS17", ComputeSpec("float16"), 64)
    save_program(program, tmp_path / "entry")
    script = FRESH_LOADER.format(entry=str(tmp_path / "entry"), out=str(tmp_path / "spec-"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    for name, compute in (("fp16", ComputeSpec("float16")), ("mixed", ComputeSpec("float16", ("softmax",)))):
        fresh = proto.Model_pb2.Model()
        fresh.ParseFromString((tmp_path / f"spec-{name}").read_bytes())
        assert fresh == _spec(program, compute), name


def test_a_cache_entry_is_data_loading_it_runs_nothing(tiny, tmp_path):
    import pickle

    from google.protobuf.message import DecodeError

    from precision_sweep.convert.converter import frontend_program
    from precision_sweep.convert.program_store import load_program, save_program
    from precision_sweep.convert.recipes import ComputeSpec

    save_program(frontend_program(_loaded(tiny), "iOS17", ComputeSpec("float16"), 64), tmp_path / "entry")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "entry" / "program.milproto").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DecodeError):
        load_program(tmp_path / "entry")
    assert not marker.exists()


def test_a_failing_coremltools_pass_is_named_with_what_was_being_built(tiny, tmp_path):
    from precision_sweep.convert.converter import ConversionStepFailed, base_package
    from precision_sweep.convert.doctor import explain_conversion_error
    from precision_sweep.convert.recipes import ComputeSpec

    class BrokenSelector(ComputeSpec):
        # A real failure inside a real pass: the op selector that common::add_fp16_cast calls raises.
        def coremltools_value(self):
            import coremltools as ct

            def select(op):
                raise ValueError(f"selector cannot decide {op.op_type}")

            return ct.transform.FP16ComputePrecision(op_selector=select)

    model = _loaded(tiny)
    with pytest.raises(ConversionStepFailed) as raised:
        base_package(model, "iOS17", BrokenSelector("float16", ("conv",)), 64, tmp_path / "cache", recipe="fp16_mixed")
    message = str(explain_conversion_error(raised.value, model))
    assert "'common::add_fp16_cast' of the default pipeline" in message, message
    assert "converting the frontend program into the base package of model=tiny for precision=fp16_mixed" in message
    assert "target iOS17" in message and "the frontend program built in this process" in message
    assert str(tmp_path / "cache" / "convert" / "base") in message
    assert "unknown TF op" not in message


WORKER = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    from sweep_testing import compose
    from test_cache import _loaded
    from precision_sweep.convert import convert_variant
    model = _loaded(Path({model!r}))
    for recipe in ("fp16", "int8"):
        cfg = compose([f"precision={{recipe}}", "target=ios17"])
        converted = convert_variant(model, cfg.precision, cfg.target, Path({out!r}) / sys.argv[1] / f"{{recipe}}.mlpackage",
                                    max_batch=64, cache_dir=Path({cache!r}))
        print("RESULT", recipe, converted.size_bytes, converted.compression_ratio)
    """
)


@pytest.mark.slow
def test_parallel_workers_share_the_cache_and_compute_each_entry_once(tiny, tmp_path):
    cache = tmp_path / "cache"
    script = tmp_path / "worker.py"
    tests = str(__import__("pathlib").Path(__file__).parent)
    script.write_text(WORKER.format(tests=tests, model=str(tiny), out=str(tmp_path / "out"), cache=str(cache)))
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": f"{tests}:{str(__import__('pathlib').Path(tests).parent)}"}
    workers = [subprocess.Popen([sys.executable, str(script), name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env) for name in ("a", "b")]
    logs = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        logs.append(out)
    built = [line for log in logs for line in log.splitlines() if "converting tiny" in line]
    # fp16 and fp32 (the size reference): one frontend and one base package each, in total
    assert sorted(line.split(":")[0].split()[-1] for line in built) == ["base", "base", "frontend", "frontend"], built
    results = [sorted(line for line in log.splitlines() if line.startswith("RESULT")) for log in logs]
    assert results[0] == results[1]
    assert len(list((cache / "convert" / "frontend").glob("*.milprogram"))) == 2
    assert len(list((cache / "convert" / "base").glob("*.mlpackage"))) == 2
    # a third process finds everything on disk
    third = subprocess.run([sys.executable, str(script), "c"], capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "converting tiny" not in third.stdout


# Issue 16: a recipe run after another recipe, in separate processes sharing one cache folder,
# gives the outputs it gives on an empty conversion cache.
PAIRS = [("fp16", "fp16_mixed"), ("fp16_mixed", "fp16"), ("fp16", "fp16_auto"), ("fp32", "w8a8"), ("int8", "int8_auto")]


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """A cache folder holding only the trained digits model (the conversion caches empty)."""
    from precision_sweep.data import load_inputs

    cache = tmp_path_factory.mktemp("models-only")
    cfg = compose(["target=ios17"])
    load_inputs(cfg.model, cfg.dataset, cache)
    return cache / "models"


def _job(folder: Path, cache: Path, precision: str):
    """One ``precision-sweep`` process: (run status, program spec, model outputs)."""
    import shutil

    from coremltools.models.utils import load_spec

    from sweep_testing import mlflow_client, run_cli

    outputs = folder / precision
    result = run_cli(["precision-sweep", f"precision={precision}", "target=ios17", "runtime=emulator",
                      f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false"], cwd=folder)
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert result.returncode == 0 and run.info.status == "FINISHED", (precision, result.stderr[-3000:])
    (package,) = outputs.glob("runs/*/*.mlpackage")
    (predictions,) = outputs.glob("runs/*/predictions.npz")
    spec = load_spec(str(package))
    outputs_array = np.load(predictions, allow_pickle=False)["outputs"]
    shutil.rmtree(outputs / "runs")
    return spec.mlProgram.SerializeToString(deterministic=True), outputs_array


def _with_models(folder: Path, models: Path) -> Path:
    import shutil

    cache = folder / "cache"
    shutil.copytree(models, cache / "models")
    return cache


@pytest.mark.slow
def test_each_recipe_after_another_in_a_shared_cache_equals_an_empty_cache(trained_models, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def pair(index):
        first, second = PAIRS[index]
        shared = _with_models(tmp_path / f"pair{index}", trained_models)
        _job(tmp_path / f"pair{index}", shared, first)
        after = _job(tmp_path / f"pair{index}", shared, second)
        alone = _job(tmp_path / f"alone{index}", _with_models(tmp_path / f"alone{index}", trained_models), second)
        return after, alone

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(pair, range(len(PAIRS))))
    for (first, second), (after, alone) in zip(PAIRS, results):
        assert after[0] == alone[0], f"{second} after {first}: the program differs from an empty cache's"
        np.testing.assert_array_equal(after[1], alone[1], err_msg=f"{second} after {first}")
