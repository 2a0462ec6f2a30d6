"""A store written by another MLflow version: every command refuses it in one paragraph that
says which side is older and the fix, and leaves the store as it was.

MLflow 3.18 released mid-CI once: the wheel's fresh environment wrote its store with 3.18, and
the test process's 3.17 could not open it. MLflow checks the schema revision in the store's
``alembic_version`` row against its own migrations. The stores here are real MLflow stores with
a finished sweep in them, whose revision row names a migration no MLflow has (as a newer
MLflow's store looks to this one) or this MLflow's previous migration (an older MLflow's).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from sweep_testing import run_cli

NEWER_REVISION = "feedfacecafe"  # no MLflow release has it (3.18's own head, f4a9b2c7d1e6, is known to 3.18)


def _store_with_a_sweep(outputs: Path) -> Path:
    from mlflow.tracking import MlflowClient

    path = outputs / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment = client.create_experiment("precision-sweep", artifact_location=(outputs / "art").as_uri())
    parent = client.create_run(experiment, tags={"precision_sweep.role": "sweep"})
    run = client.create_run(experiment, tags={"precision_sweep.role": "job", "mlflow.parentRunId": parent.info.run_id})
    client.log_param(run.info.run_id, "precision", "fp16")
    client.log_metric(run.info.run_id, "accuracy_delta", -0.001)
    client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    client._tracking_client.store.engine.dispose()
    return path


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    return script.get_revision(_get_latest_schema_revision()).down_revision


def _set_revision(path: Path, revision: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    db.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def outputs(tmp_path) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


def test_the_revision_check_tells_an_older_store_from_a_newer_one():
    from mlflow.store.db.utils import _get_latest_schema_revision

    from precision_sweep.tracking import store

    assert store._known_revision(_get_latest_schema_revision())
    assert store._known_revision(_previous_revision())
    assert not store._known_revision(NEWER_REVISION)


def test_a_newer_mlflows_store_is_refused_by_pick_and_diagnose_and_kept(outputs):
    path = _store_with_a_sweep(outputs)
    _set_revision(path, NEWER_REVISION)
    before = _digest(path)
    for command in (["precision-pick", "--max-drop", "1"], ["precision-diagnose", "0123456789abcdef"]):
        result = run_cli(command, cwd=outputs.parent)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        message = " ".join(result.stderr.split())
        assert f"{command[0]}: error: The MLflow store at sqlite:///{path}" in message
        assert "written by a newer MLflow than this environment's mlflow " in message
        assert NEWER_REVISION in message and "pip install -U 'mlflow>=3,<4'" in message
    assert _digest(path) == before


def test_an_older_mlflows_store_names_mlflow_db_upgrade(outputs):
    path = _store_with_a_sweep(outputs)
    older = _previous_revision()
    _set_revision(path, older)
    before = _digest(path)
    result = run_cli(["precision-pick", "--max-drop", "1"], cwd=outputs.parent)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "was written by an older MLflow" in message and f"revision {older}" in message
    assert f"`mlflow db upgrade sqlite:///{path}`" in message
    assert _digest(path) == before


def test_a_sweep_into_a_newer_mlflows_store_stops_before_any_run(outputs):
    path = _store_with_a_sweep(outputs)
    _set_revision(path, NEWER_REVISION)
    before = _digest(path)
    result = run_cli(["precision-sweep", "sweep=quick", "progress=false", "runtime.progress=false"], cwd=outputs.parent)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "written by a newer MLflow" in " ".join(result.stderr.split())
    assert _digest(path) == before  # no run was opened, nothing stored was touched
    assert not (outputs / "multirun").exists() and not list(outputs.glob("**/error.txt"))
