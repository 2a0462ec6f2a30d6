"""pytest plugin of benchmarks/nn_frontend_fidelity.py: coremltools' own TF frontend op tests,
with their Core ML prediction made by the emulator.

coremltools' tests (``converters/mil/frontend/tensorflow{,2}/test/``) convert a TF graph or
Keras model, then compare Core ML's prediction with TensorFlow's through
``converters/mil/testing_utils.compare_backend``, which predicts only on macOS. Loaded with
``-p _fidelity_plugin`` (``benchmarks/`` on ``PYTHONPATH``), this plugin:

* makes the testing utilities believe they run on macOS 15 (``_IS_MACOS``, ``_macos_version``)
  so that they reach the comparison (and the tests' own macOS-version branches take today's
  path);
* replaces ``run_core_ml_predict``, the one place they call ``MLModel.predict``, by a run of the
  emulator on the saved ``.mlmodel`` under ``cpu_only`` (fp32, as Core ML's CPU computes a
  NeuralNetwork); coremltools' own tolerances and shape checks then judge the outputs;
* records, per test, the stage it reached (conversion, emulator load, emulator run, comparison,
  the test's own checks afterwards), the NN layer types of its spec and its outcome, one JSON
  line per test in ``$FIDELITY_RECORDS/<pid>.jsonl`` (one file per xdist worker);
* with ``--fidelity-every=k``, keeps every k-th collected case (a deterministic sample).

The backend is chosen by coremltools' own switch, ``PYMIL_TEST_TARGETS=neuralnetwork``
(``converters/mil/testing_reqs.py``), which the script sets.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import traceback
from pathlib import Path

import pytest

_MACOS = (15, 0)
_STATE: dict = {}


def _patch_coremltools() -> None:
    """Point coremltools' testing utilities at the emulator (before any test module imports them)."""
    import coremltools.models.utils as ct_utils

    ct_utils._macos_version = lambda: _MACOS  # the test modules import it by name, after this
    from coremltools.converters.mil import testing_utils

    testing_utils._IS_MACOS = True
    testing_utils.run_core_ml_predict = _emulator_predict
    original = testing_utils.compare_backend

    def compare_backend(*args, **kwargs):
        _STATE["stage"] = "predict"
        result = original(*args, **kwargs)
        _STATE["stage"] = "after"  # the test's own checks after the comparison
        return result

    testing_utils.compare_backend = compare_backend
    from coremltools.converters.mil.frontend.tensorflow.test import testing_utils as tf1_utils
    from coremltools.converters.mil.frontend.tensorflow2.test import testing_utils as tf2_utils

    tf1_utils.compare_backend = tf2_utils.compare_backend = compare_backend
    tf2_utils._macos_version = ct_utils._macos_version


def _emulator_predict(mlmodel, input_key_values, state=None):
    """``testing_utils.run_core_ml_predict`` through the emulator: inputs cast to float32 as
    the original does, the model saved to a ``.mlmodel`` and loaded back (the file path a user
    takes), run under ``cpu_only``."""
    import numpy as np

    from precision_sweep.emulator import Emulator

    feeds = {}
    for key, value in input_key_values.items():
        value = np.asarray(value)
        feeds[key] = value.astype(np.float32) if value.shape != () else np.array([value], np.float32)
        input_key_values[key] = feeds[key]
    spec = mlmodel.get_spec()
    _STATE["layers"] = _layer_types(spec)
    _STATE["predicted"] = True
    _STATE["stage"] = "emulator_load"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.mlmodel"
        if spec.WhichOneof("Type") == "mlProgram":
            path = path.with_suffix(".mlpackage")
        mlmodel.save(str(path))
        emulator = Emulator(path, "cpu_only")
    _STATE["stage"] = "emulator_run"
    outputs = emulator.predict(feeds)
    _STATE["stage"] = "compare"
    return {name: np.asarray(value) for name, value in outputs.items()}


def _layer_types(spec) -> list[str]:
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return []
    types: set[str] = set()

    def walk(layers):
        for lay in layers:
            layer_type = lay.WhichOneof("layer")
            types.add(layer_type)
            if layer_type == "loop":
                walk(lay.loop.conditionNetwork.layers)
                walk(lay.loop.bodyNetwork.layers)
            elif layer_type == "branch":
                walk(lay.branch.ifBranch.layers)
                walk(lay.branch.elseBranch.layers)

    walk(getattr(spec, kind).layers)
    return sorted(types)


@pytest.hookimpl(tryfirst=True)
def pytest_make_parametrize_id(config, val, argname):
    """coremltools' ``argname=value`` ids without object addresses (``<function f at 0x..>``),
    so that every xdist worker collects the same ids."""
    text = val.__name__ if callable(val) and hasattr(val, "__name__") else str(val)
    return f"{argname}={re.sub(r' at 0x[0-9a-f]+', '', text)}"


def pytest_addoption(parser):
    parser.addoption("--fidelity-every", type=int, default=1, help="keep every k-th collected case")


def pytest_configure(config):
    _patch_coremltools()


def pytest_collection_modifyitems(config, items):
    every = config.getoption("--fidelity-every")
    if every > 1:
        kept = [item for i, item in enumerate(items) if i % every == 0]
        config.hook.pytest_deselected(items=[item for i, item in enumerate(items) if i % every])
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _STATE.clear()
    _STATE.update(stage="convert", predicted=False, layers=[])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        record = {"nodeid": item.nodeid, "outcome": report.outcome, "stage": _STATE.get("stage", "convert"),
                  "predicted": _STATE.get("predicted", False), "layers": _STATE.get("layers", []),
                  "xfail": hasattr(report, "wasxfail")}
        if call.excinfo is not None and report.outcome == "failed":
            exc = call.excinfo.value
            message = str(exc).strip().splitlines()
            record["error"] = f"{type(exc).__name__}: {message[0][:300] if message else ''}"
            record["where"] = _where(call.excinfo.tb)
        elif call.excinfo is not None:
            record["error"] = str(call.excinfo.value).strip().splitlines()[0][:200] if str(call.excinfo.value).strip() else ""
        folder = os.environ.get("FIDELITY_RECORDS")
        if folder:
            with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _where(tb) -> str:
    """The innermost frame of the failure outside the test machinery, as ``file:function``."""
    frames = traceback.extract_tb(tb)
    for frame in reversed(frames):
        if "site-packages/numpy" not in frame.filename and "_pytest" not in frame.filename:
            parts = Path(frame.filename).parts
            short = "/".join(parts[-3:])
            return f"{short}:{frame.name}"
    return ""
