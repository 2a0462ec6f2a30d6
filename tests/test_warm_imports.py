"""Warm workers are cheap (issue 13, item 4): a job whose model card, baseline, dataset split and
converted packages are cached imports neither TensorFlow, Keras, coremltools nor scikit-learn,
and gets what a cold job gets (same packages, spec version, baseline and layer mapping)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sweep_testing import REPO, compose

HEAVY = ("tensorflow", "keras", "coremltools", "sklearn")
PRECISIONS = ("fp16", "int8")


def package_digest(path: Path) -> str:
    """One hash of a package's relative file names and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


# One warm job's steps up to "here is the converted package", in a fresh process. A finder
# records the stack of the first import of each heavy library, to say who imported it.
WARM_JOB = textwrap.dedent(
    """
    import json, sys, traceback
    from pathlib import Path

    HEAVY = {heavy!r}
    stacks = {{}}

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name in HEAVY and name not in stacks:
                stacks[name] = "".join(traceback.format_stack()[:-1])
            return None

    sys.meta_path.insert(0, Recorder())

    import numpy as np
    from sweep_testing import compose
    from precision_sweep.baseline import baseline_outputs
    from precision_sweep.convert import convert_variant
    from precision_sweep.data import load_inputs
    from precision_sweep.data.layers import LayerMapper

    cache, out = Path({cache!r}), Path({out!r})
    cfg = compose(["target=ios17", f"paths.cache={{cache}}"])
    dataset, model = load_inputs(cfg.model, cfg.dataset, cache)
    np.save(out / "baseline.npy", baseline_outputs(model, dataset.x_test, dataset.content_hash, cache))
    converted = {{}}
    for precision in {precisions!r}:
        job = compose([f"precision={{precision}}", "target=ios17", f"paths.cache={{cache}}"])
        c = convert_variant(model, job.precision, job.target, out / f"{{precision}}.mlpackage",
                            max_batch=job.model.max_batch, cache_dir=cache)
        converted[precision] = [c.spec_version, c.effective_target, c.size_bytes, c.weights_bytes,
                                c.reference_size_bytes, c.reference_weights_bytes]
    mapper = LayerMapper.of_model(model)
    print(json.dumps({{
        "model": [model.content_hash, model.input_name, list(model.input_shape), model.n_outputs, model.run_params],
        "converted": converted,
        "mapper": [mapper.layers, mapper.prefix.pattern],
        "loaded": model.is_loaded,
        "imported": [name for name in HEAVY if name in sys.modules],
        "stacks": stacks,
    }}))
    """
)


def test_warm_job_imports_no_tensorflow_keras_coremltools_or_sklearn(shared_cache, tmp_path):
    import coremltools as ct

    from precision_sweep.baseline import baseline_outputs
    from precision_sweep.convert import convert_variant
    from precision_sweep.data import load_inputs
    from precision_sweep.data.layers import LayerMapper

    # The cold job fills the caches (the model may be trained already by another test).
    cfg = compose(["target=ios17", f"paths.cache={shared_cache}"])
    dataset, model = load_inputs(cfg.model, cfg.dataset, shared_cache)
    baseline = baseline_outputs(model, dataset.x_test, dataset.content_hash, shared_cache)
    np.testing.assert_array_equal(baseline, model.keras_model.predict(dataset.x_test, batch_size=256, verbose=0))
    cold = {}
    for precision in PRECISIONS:
        job = compose([f"precision={precision}", "target=ios17", f"paths.cache={shared_cache}"])
        c = convert_variant(model, job.precision, job.target, tmp_path / "cold" / f"{precision}.mlpackage",
                            max_batch=job.model.max_batch, cache_dir=shared_cache)
        assert c.spec_version == ct.utils.load_spec(str(c.path)).specificationVersion
        cold[precision] = ([c.spec_version, c.effective_target, c.size_bytes, c.weights_bytes,
                            c.reference_size_bytes, c.reference_weights_bytes], package_digest(c.path))
    keras_mapper = LayerMapper.from_keras(model.keras_model)

    out = tmp_path / "warm"
    out.mkdir()
    script = WARM_JOB.format(heavy=HEAVY, cache=str(shared_cache), out=str(out), precisions=PRECISIONS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    warm = json.loads(result.stdout.strip().splitlines()[-1])

    assert warm["imported"] == [], "a warm job imported " + "\n".join(
        f"{name} from:\n{stack}" for name, stack in warm["stacks"].items())
    assert warm["loaded"] is False
    assert warm["model"] == [model.content_hash, model.input_name, list(model.input_shape), model.n_outputs,
                             json.loads(json.dumps(model.run_params))]
    np.testing.assert_array_equal(np.load(out / "baseline.npy"), baseline)
    for precision in PRECISIONS:
        assert warm["converted"][precision] == cold[precision][0]
        assert package_digest(out / f"{precision}.mlpackage") == cold[precision][1]
    assert warm["mapper"] == [keras_mapper.layers, keras_mapper.prefix.pattern]


@pytest.mark.parametrize(("precision", "target"), [
    ("fp32", "ios15"), ("fp16", "ios16"), ("int8", "ios15"), ("palettize", "ios17"),
    ("int8_per_block", "ios18"), ("fp16", "macos15"),
])
def test_spec_version_read_from_the_package_bytes_is_coremltools(shared_cache, tmp_path, precision, target):
    """iOS15 int8 is raised to spec 7 by coremltools: the bytes say so too."""
    import coremltools as ct

    from precision_sweep.convert import convert_variant
    from precision_sweep.convert.targets import package_spec_version
    from precision_sweep.data import load_inputs

    cfg = compose([f"precision={precision}", f"target={target}", f"paths.cache={shared_cache}"])
    _, model = load_inputs(cfg.model, cfg.dataset, shared_cache)
    converted = convert_variant(model, cfg.precision, cfg.target, tmp_path / "m.mlpackage",
                                max_batch=cfg.model.max_batch, cache_dir=shared_cache)
    expected = ct.utils.load_spec(str(converted.path)).specificationVersion
    assert package_spec_version(converted.path) == converted.spec_version == expected
    if (precision, target) == ("int8", "ios15"):
        assert expected == 7 and converted.effective_target == "iOS16"


def test_spec_version_field_anywhere_in_the_message():
    from precision_sweep.convert.targets import _spec_version_field

    assert _spec_version_field(b"\x08\x09\x12\x02ab") == 9
    # Another field first (length-delimited, then a varint), then field 1 with a 2-byte varint.
    assert _spec_version_field(b"\x12\x03abc\x18\x05\x08\x96\x01") == 150
    assert _spec_version_field(b"\x12\x02ab") == 0  # absent: proto3's default
    assert _spec_version_field(b"\x12\x09ab") is None  # truncated


def test_library_versions_are_the_modules_own():
    import coremltools
    import keras
    import tensorflow

    from precision_sweep.data.versions import library_version

    assert library_version("tensorflow") == tensorflow.__version__
    assert library_version("keras") == keras.__version__
    assert library_version("coremltools") == coremltools.__version__


def test_model_card_keeps_safe_mode_and_loads_on_first_use(tmp_path):
    """A card written by an opted-in load does not let a safe-mode job skip the Lambda check;
    a job read from the card loads the model (with its own safe_mode) when it is first used."""
    import keras

    from precision_sweep.data import load_model
    from precision_sweep.data.layers import LayerMapper
    from precision_sweep.errors import UserInputError

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="feat")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x), name="with_lambda")
    model.save(tmp_path / "lambda.keras")
    cache = tmp_path / "cache"
    common = ["model=keras", f"model.path={tmp_path / 'lambda.keras'}"]

    first = load_model(compose([*common, "model.safe_mode=false"]).model, None, cache)
    assert first.is_loaded
    (card,) = (cache / "models" / "cards").glob("keras-*.json")
    data = json.loads(card.read_text())
    assert data["content_hash"] == first.content_hash and data["input_shape"] == [6]
    assert data["keras_layers"] == {"layers": ["feat", "double", "probs"], "model": "with_lambda", "inputs": ["feat"]}

    with pytest.raises(UserInputError, match=r"contains Lambda layer\(s\) double"):
        load_model(compose(common).model, None, cache)

    again = load_model(compose([*common, "model.safe_mode=false"]).model, None, cache)
    assert not again.is_loaded
    assert again.run_params == first.run_params and again.run_params["model_lambda_layers"] == "double"
    mapper, reference = LayerMapper.of_model(again), LayerMapper.of_model(first)
    assert not again.is_loaded and mapper.layers == reference.layers
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(again.keras_model.predict(x, verbose=0), first.keras_model.predict(x, verbose=0))
    assert again.is_loaded
