"""The MLflow store: absolute URIs, and the experiment created once by the launching process.

MLflow on SQLite corrupts a new database, and files runs under "Default", when several
processes create the database or the experiment at once; so the launcher creates both before
any job starts and jobs pass ``experiment_id`` explicitly.

The launching process also finds an unusable store there, once and quickly (MLflow itself
retries for minutes): an MLflow server nobody answers at, a PostgreSQL URI with a wrong
password or database, a missing driver. Each is a one-paragraph
:class:`~precision_sweep.errors.UserInputError` naming the store (password hidden), what is
wrong and the fix.
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

    Call this once, in the launching process: an unusable store (nothing listening, a wrong
    password, a missing database or driver) is a :class:`UserInputError` raised here, after one
    attempt, before any run exists. Two launching processes may race to create the experiment
    on a shared server; the loser finds the winner's.
    """
    uri = absolute_uri(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if is_database_uri(uri):
        check_database(uri)  # MLflow retries a refused database connection for ~100 s
    if urlparse(uri).scheme in ("http", "https"):
        check_server(uri)  # and an unreachable server for minutes
    try:
        with _fail_fast():  # reachable, but a just-started server's first answer can be slow
            client = client_for(uri)
            experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return create_or_find_experiment(client, name, _artifact_root(artifact_location))
    except UserInputError:
        raise
    except Exception as exc:
        raise UserInputError(store_error_message(uri, exc)) from exc


def _artifact_root(artifact_location: str | None) -> str | None:
    """An absolute file URI for a local artifact folder (created); other URIs unchanged."""
    if not artifact_location:
        return None
    location = str(artifact_location)
    if "://" in location:
        return location
    Path(location).mkdir(parents=True, exist_ok=True)
    return Path(location).resolve().as_uri()


def create_or_find_experiment(client, name: str, location: str | None) -> str:
    """Create the experiment; if another process created it first, return that one's id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # Another sweep created it between our look-up and our create (a shared server).
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise UserInputError(f"The experiment {name!r} exists but cannot be found (deleted?). Restore it "
                             f"with `mlflow experiments restore` or choose another tracking.experiment.")
    return experiment.experiment_id


# -- an MLflow tracking server (http://host:port) ------------------------------------------


def check_server(uri: str) -> None:
    """Open one TCP connection to the server, with a timeout; a failure is a :class:`UserInputError`.

    Skipped when the environment routes the host through an HTTP proxy (only the proxy is
    reached directly then; MLflow's own first request tells).
    """
    import socket
    import urllib.request

    parsed = urlparse(uri)
    host = parsed.hostname or ""
    if urllib.request.getproxies().get(parsed.scheme) and not urllib.request.proxy_bypass(host):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserInputError(store_error_message(uri, exc)) from exc


# -- SQL databases given directly as tracking.uri (postgresql://user:password@host:port/db) --

DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
CONNECT_TIMEOUT_S = 10


def is_database_uri(uri: str) -> bool:
    """A SQLAlchemy database URI other than SQLite (``postgresql+psycopg2://...`` included)."""
    return urlparse(str(uri)).scheme.split("+")[0] in DATABASE_SCHEMES


def check_database(uri: str) -> None:
    """Connect to the database once, with a timeout; a failure is a :class:`UserInputError`."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = None
    try:
        connect_args = {} if uri.startswith("mssql") else {"connect_timeout": CONNECT_TIMEOUT_S}
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=connect_args)
        with engine.connect():
            pass
    except Exception as exc:
        raise UserInputError(store_error_message(uri, exc)) from exc
    finally:
        if engine is not None:
            engine.dispose()


# -- what went wrong, said without the password ------------------------------------------------


def redact(uri: str) -> str:
    """``uri`` with the password of its user part replaced by ``***``."""
    parsed = urlparse(str(uri))
    if parsed.password is None:
        return str(uri)
    user = parsed.username or ""
    host = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=f"{user}:***@{host}").geturl()


def _error_text(uri: str, exc: BaseException) -> str:
    """The first line of the underlying error (the driver's, not SQLAlchemy's wrapper), redacted."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip() or type(cause).__name__
    line = " ".join(text.splitlines()[0].split())
    password = urlparse(str(uri)).password
    return line.replace(password, "***") if password else line


# (words in the error, what is wrong, how to fix it); the first match wins.
_DIAGNOSES = [
    (("no module named",), "the database driver is not installed",
     ("pip install 'psycopg[binary]' (the driver of postgresql:// URIs; a URI naming another driver, "
      "postgresql+<driver>://, needs that package) into the environment that runs precision-sweep.")),
    (("password authentication failed",), "the database refused the user name or password",
     ("correct the user and password in tracking.uri=postgresql://USER:PASSWORD@HOST:PORT/DB (test "
      "them with: psql -h HOST -p PORT -U USER DB), or ask the database owner for the role.")),
    (("access denied for user",), "the database refused the user name or password",
     "correct the user and password in tracking.uri."),
    (("database", "does not exist"), "the database does not exist on that server",
     "create it (createdb -h HOST -p PORT -U postgres -O USER DB) or correct its name in tracking.uri."),
    (("role", "does not exist"), "the database user (role) does not exist on that server",
     "create it (psql ... -c \"CREATE ROLE USER LOGIN PASSWORD '...'\") or correct the user in tracking.uri."),
    (("error code 401",), "the tracking server refused the credentials",
     "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server."),
    (("error code 403",), "the tracking server refused access",
     "ask the server's owner for access, or set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD."),
    (("connection refused",), "nothing is listening at that host and port",
     ("start the server (README, \"Team set-up\"), or correct the host and port in tracking.uri "
      "(or $MLFLOW_TRACKING_URI); tracking=local needs no server.")),
    (("read timed out",), "the server accepts connections but did not answer a request in 60 s",
     "look at the server's log (still starting? overloaded?) and try again, or correct tracking.uri."),
    (("timed out",), "the server did not answer in time",
     "check that the host is reachable from this machine and the server is up, or correct tracking.uri."),
    (("timeout expired",), "the server did not answer in time",
     "check that the host is reachable from this machine and the server is up, or correct tracking.uri."),
    (("name or service not known",), "the host name does not resolve",
     "correct the host in tracking.uri (or $MLFLOW_TRACKING_URI)."),
    (("could not translate host name",), "the host name does not resolve",
     "correct the host in tracking.uri."),
]


def store_error_message(uri: str, exc: BaseException) -> str:
    """One paragraph: which store, what is wrong with it, the driver's words, and the fix."""
    detail = _error_text(uri, exc)
    lowered = f"{type(exc).__name__} {detail}".lower()
    for words, what, fix in _DIAGNOSES:
        if all(word in lowered for word in words):
            break
    else:
        what, fix = "it did not answer a first request", (
            "check tracking.uri (or $MLFLOW_TRACKING_URI): start the server, fix the path or the "
            "credentials, or use tracking=local.")
    return f"Cannot reach the MLflow tracking store at {redact(uri)}: {what} ({detail}). Fix: {fix}"


@contextmanager
def _fail_fast():
    """Few retries for MLflow HTTP requests inside the block (MLflow's default backs off for
    minutes), with time for a slow first answer: a just-started server sets up its store on
    the first request, and a busy machine makes that take tens of seconds."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
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
