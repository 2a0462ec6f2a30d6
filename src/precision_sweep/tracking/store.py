"""The MLflow store: absolute URIs, and the experiment created once by the launching process.

MLflow on SQLite corrupts a new database, and files runs under "Default", when several
processes create the database or the experiment at once; so the launcher creates both before
any job starts and jobs pass ``experiment_id`` explicitly.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from precision_sweep.errors import UserInputError

ENV_URI = "PRECISION_SWEEP_TRACKING_URI"
ENV_EXPERIMENT = "PRECISION_SWEEP_EXPERIMENT_ID"
ENV_PARENT = "PRECISION_SWEEP_PARENT_RUN_ID"


def absolute_uri(uri: str) -> str:
    """Make a sqlite:/// or plain-path tracking URI absolute (relative to the current dir)."""
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            path = str(Path(path).resolve())
        return "sqlite:///" + path
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return Path(path).resolve().as_uri()
    return uri


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def prepare_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Create (or find) the database and the experiment; return the experiment id.

    Call this once, in the launching process.
    """
    uri = absolute_uri(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = client_for(uri)
    try:
        with _fail_fast():  # MLflow retries an unreachable server for minutes: probe once
            experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if artifact_location:
            location = str(artifact_location)
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)
    except UserInputError:
        raise
    except Exception as exc:
        raise UserInputError(
            f"Cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Check tracking.uri (or "
            "MLFLOW_TRACKING_URI): start the server, fix the path, or use tracking=local."
        ) from exc


@contextmanager
def _fail_fast():
    """No retries and a short timeout for MLflow HTTP requests inside the block."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update({key: os.environ.get(key) or value for key, value in keys.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sweep_context() -> tuple[str, str, str] | None:
    """``(uri, experiment_id, parent_run_id)`` set by the launching process, if any."""
    values = [os.environ.get(k) for k in (ENV_URI, ENV_EXPERIMENT, ENV_PARENT)]
    return tuple(values) if all(values) else None  # type: ignore[return-value]
