"""Shared fixtures. Every test writes under its own ``tmp_path``; nothing touches the
repository's ``outputs/``. Helpers live in ``sweep_testing``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    path = tmp_path / "outputs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A model/baseline cache shared by the tests of one session (the trained digits model)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session", autouse=True)
def _library_objects_out_of_the_collectors_way():
    """coremltools calls gc.collect() three times per conversion; with TensorFlow imported each
    call rescans half a million objects. Freeze them once, as the converter does in a job."""
    from precision_sweep.convert.converter import freeze_library_objects

    freeze_library_objects()


@pytest.fixture(scope="module", autouse=True)
def _earlier_modules_objects_out_of_the_collectors_way(_library_objects_out_of_the_collectors_way):
    """What earlier test modules left alive (models held by fixtures, MLflow clients) would
    make every later conversion's collections slow again: collect, then freeze the survivors."""
    import gc

    gc.collect()
    gc.freeze()
