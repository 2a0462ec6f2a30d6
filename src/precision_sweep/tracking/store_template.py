"""A per-user template of an empty MLflow SQLite store, copied instead of migrated.

MLflow builds a new SQLite store by running every one of its schema migrations, about 2.7 s on
a 2-core machine: paid by every first sweep into a new outputs folder, by every test that makes
a store, and by benchmarks comparing sweeps in fresh folders. The first store built on a
machine is kept as a template (one per MLflow version); later stores are a copy of it, checked
and given the Default experiment MLflow would have made there.

The template lives in the user's own cache folder (``platformdirs``' user cache, or
``$PRECISION_SWEEP_STORE_TEMPLATES``; set it to an empty string to turn templates off), not in
``paths.cache``, which cluster users may share: nobody else can put a database there. A
template that does not look like a fresh store (not a database, rows beyond the Default
experiment, another schema revision than MLflow's own) is not used, and is replaced.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from importlib import metadata
from pathlib import Path

ENV_FOLDER = "PRECISION_SWEEP_STORE_TEMPLATES"
# Tables a fresh MLflow store fills, and the rows it puts there.
_FRESH_ROWS = {"experiments": 1, "alembic_version": 1, "workspaces": 1}


def folder() -> Path | None:
    """Where templates are kept for this user; None when turned off."""
    configured = os.environ.get(ENV_FOLDER)
    if configured is not None:
        return Path(configured) if configured.strip() else None
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("precision-sweep")) / "mlflow-stores"


def _path(templates: Path) -> Path:
    return templates / f"mlflow-{metadata.version('mlflow')}.db"


def copy_into(staging: Path, templates: Path | None) -> bool:
    """Copy the template to ``staging`` and make it this store's; False if there is none usable
    (``staging`` is then absent and the caller migrates a new one)."""
    if templates is None or not _path(templates).is_file():
        return False
    try:
        shutil.copyfile(_path(templates), staging)
        if _looks_fresh(staging):
            _make_default_experiment_local(staging)
            return True
    except (OSError, sqlite3.Error):
        pass
    staging.unlink(missing_ok=True)
    return False


def keep(fresh_store: Path, templates: Path | None) -> None:
    """Keep a store MLflow has just built (nothing logged to it) as the template. Best effort:
    a cache folder that cannot be written only costs the next store its migrations."""
    if templates is None:
        return
    try:
        templates.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = templates / f".{_path(templates).name}.{os.getpid()}.partial"
        shutil.copyfile(fresh_store, partial)
        os.replace(partial, _path(templates))  # atomic: readers see the old template or the new
    except OSError:
        pass


def _looks_fresh(path: Path) -> bool:
    """A database holding only what MLflow puts in a new store, at the schema MLflow expects."""
    try:
        return _holds_only_a_fresh_store(path)
    except sqlite3.Error:  # not a database, or not MLflow's tables
        return False


def _holds_only_a_fresh_store(path: Path) -> bool:
    with _connect(path) as connection:
        if connection.execute("PRAGMA quick_check").fetchone() != ("ok",):
            return False
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if rows != _FRESH_ROWS.get(table, 0):
                return False
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        (default,) = connection.execute("SELECT name FROM experiments WHERE experiment_id = 0").fetchone()
    return revision == _head_revision() and default == "Default"


def _make_default_experiment_local(path: Path) -> None:
    """Give the Default experiment the artifact folder and times MLflow gives it on creation
    (``./mlruns/0`` of the creating process, now), not the template's."""
    now = int(time.time() * 1000)
    with _connect(path) as connection:
        connection.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
            "WHERE experiment_id = 0",
            (str(Path.cwd() / "mlruns" / "0"), now, now),
        )


def _head_revision() -> str:
    """The newest schema revision of the installed MLflow (what it migrates a new store to)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


class _connect:
    """An sqlite3 connection that commits and closes on exit (sqlite3's own context manager
    commits but leaves the file open)."""

    def __init__(self, path: Path):
        self.connection = sqlite3.connect(path)

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.connection.commit()
        self.connection.close()
