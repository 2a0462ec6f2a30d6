"""Conversion caches: the pickled frontend program converts exactly like the original, and
concurrent processes sharing a cache directory compute every entry once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def test_pickled_frontend_program_converts_identically(tiny):
    import copy

    import coremltools as ct

    from precision_sweep.convert.converter import frontend_program
    from precision_sweep.convert.program_store import dumps_program, loads_program
    from precision_sweep.convert.recipes import ComputeSpec

    model = _loaded(tiny)
    program = frontend_program(model, "iOS17", ComputeSpec("float16"), 64)
    restored = loads_program(dumps_program(program))
    specs = [
        ct.convert(copy.deepcopy(p), convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                   minimum_deployment_target=ct.target.iOS17, skip_model_load=True).get_spec()
        for p in (program, restored)
    ]
    assert specs[0].mlProgram == specs[1].mlProgram
    assert specs[0].description == specs[1].description


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
    assert len(list((cache / "convert" / "frontend").glob("*.milpickle"))) == 2
    assert len(list((cache / "convert" / "base").glob("*.mlpackage"))) == 2
    # a third process finds everything on disk
    third = subprocess.run([sys.executable, str(script), "c"], capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "converting tiny" not in third.stdout
