"""A new SQLite store is a checked copy of the user's template of a fresh MLflow store
(tracking/store_template.py): used when it looks fresh, refused and replaced otherwise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from precision_sweep.tracking import store, store_template


@pytest.fixture
def templates(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "templates"
    monkeypatch.setenv(store_template.ENV_FOLDER, str(folder))
    return folder


def _template_file(templates: Path) -> Path:
    (path,) = templates.glob("mlflow-*.db")
    return path


def _no_migrations(monkeypatch):
    def refuse(path):
        raise AssertionError("the store was migrated, not copied from the template")

    monkeypatch.setattr(store, "_migrate_new", refuse)


def test_the_first_store_becomes_the_template_and_the_next_is_a_working_copy(tmp_path, templates, monkeypatch):
    store.create_sqlite_database(tmp_path / "first" / "mlflow.db")
    assert _template_file(templates).is_file()

    _no_migrations(monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}"
    experiment = store.prepare_experiment(uri, "precision-sweep", None)  # MLflow checks the schema on open
    client = store.client_for(uri)
    default = client.get_experiment("0")
    assert default.name == "Default"
    assert default.artifact_location == str(elsewhere / "mlruns" / "0")  # as MLflow makes it here
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.5}
    # the template itself stays fresh: the copy is the store's own
    assert store_template._looks_fresh(_template_file(templates))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database" * 100)


def _with_a_run(path: Path) -> None:
    client = store.client_for(f"sqlite:///{path}")
    client.create_run("0")
    client._tracking_client.store.engine.dispose()


def _old_revision(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'an0ther0rev'")
    connection.close()


@pytest.mark.parametrize("spoil", [_garbage, _with_a_run, _old_revision])
def test_a_template_that_is_not_a_fresh_store_is_not_used_and_is_replaced(tmp_path, templates, spoil):
    store.create_sqlite_database(tmp_path / "first" / "mlflow.db")
    template = _template_file(templates)
    spoil(template)
    assert not store_template._looks_fresh(template)

    path = tmp_path / "second" / "mlflow.db"
    store.create_sqlite_database(path)
    client = store.client_for(f"sqlite:///{path}")
    assert client.search_runs(["0"]) == []  # migrated anew: nothing of the spoiled template
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert store_template._looks_fresh(template)  # replaced by the new fresh store


def test_templates_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv(store_template.ENV_FOLDER, "")
    assert store_template.folder() is None
    store.create_sqlite_database(tmp_path / "mlflow.db")
    assert (tmp_path / "mlflow.db").is_file()
    assert list(tmp_path.glob("**/mlflow-*.db")) == []
