"""The MLflow store: absolute URIs, and the experiment created once by the launching process.

MLflow on SQLite corrupts a new database, and files runs under "Default", when several
processes create the database or the experiment at once; so the launcher creates both before
any job starts and jobs pass ``experiment_id`` explicitly. A new SQLite database is built in a
private file and linked into place, so another process never opens it half-made.

The launching process also finds an unusable store there, once and quickly (MLflow itself
retries for minutes): an MLflow server nobody answers at, a PostgreSQL URI with a wrong
password or database, a missing driver, a database whose schema another MLflow version wrote
(the reading commands meet that one in :func:`client_for` too). Each is a one-paragraph
:class:`~precision_sweep.errors.UserInputError` naming the store (password hidden), what is
wrong and the fix.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from precision_sweep.errors import UserInputError
from precision_sweep.tracking import store_template

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
    """An MLflow client of ``uri``. A store this MLflow cannot open (its schema written by
    another MLflow version, a file that is not a database) is a :class:`UserInputError` naming
    the fix: MLflow checks a database store's schema as the client is made."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:
        raise UserInputError(store_error_message(uri, exc)) from exc


def prepare_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Create (or find) the database and the experiment; return the experiment id.

    Call this once, in the launching process: an unusable store (nothing listening, a wrong
    password, a missing database or driver) is a :class:`UserInputError` raised here, after one
    attempt, before any run exists. Two launching processes may race to create the experiment
    on a shared server; the loser finds the winner's.
    """
    uri = absolute_uri(uri)
    if uri.startswith("sqlite:///"):
        try:
            create_sqlite_database(Path(uri[len("sqlite:///"):]))
        except Exception as exc:
            raise UserInputError(store_error_message(uri, exc)) from exc
    if is_database_uri(uri):
        check_database(uri)  # MLflow retries a refused database connection for ~100 s
    if urlparse(uri).scheme in ("http", "https"):
        check_server(uri)  # and an unreachable server for minutes
    try:
        with _fail_fast():  # reachable, but a just-started server's first answer can be slow
            client = client_for(uri)
            experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise UserInputError(_deleted_message(name, experiment.experiment_id, uri))
        if experiment is not None:
            _describe(client, experiment)
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


NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows
EXPERIMENT_DESCRIPTION = (
    "precision-sweep: one parent run per sweep (its description holds the summary and the pick), "
    "one child run per job: a Core ML variant of the model (precision x deployment target x compute "
    "units) evaluated on the labeled test set against the FP32 TensorFlow baseline. Children log "
    "accuracy, accuracy_delta with its confidence interval, agreement with the baseline, size, and "
    "artifacts (the .mlpackage, predictions, placement and numeric-cliff reports); the picked run "
    "and the Pareto front are tagged pick / on_front / within_budget."
)


def _describe(client, experiment) -> None:
    """Describe an experiment made before descriptions existed (a user's own is kept). Best
    effort: two sweeps starting together both see it empty, and the database refuses the second
    insert (a unique key), which must not stop the sweep."""
    from mlflow.exceptions import MlflowException

    if experiment.tags.get(NOTE_TAG):
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, EXPERIMENT_DESCRIPTION)
    except MlflowException:
        pass


def create_sqlite_database(path: Path) -> None:
    """Create MLflow's tables in a private file, then link it into place at ``path``.

    A process opening ``path`` meanwhile (another sweep, ``mlflow ui``, ``precision-pick``, a
    script polling the store) sees no file or a complete database, never one half-migrated:
    MLflow migrating one SQLite file from two processes at once corrupts it. An existing
    database is left alone; if another process links its copy first, that one is used. The
    tables come from the user's store template when there is one (:mod:`store_template`).
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.creating")
    staging.unlink(missing_ok=True)
    templates = store_template.folder()
    try:
        if not store_template.copy_into(staging, templates):
            _migrate_new(staging)
            store_template.keep(staging, templates)
        try:
            os.link(staging, path)  # atomic, and fails rather than replace a database made meanwhile
        except FileExistsError:
            pass
    finally:
        staging.unlink(missing_ok=True)


def _migrate_new(path: Path) -> None:
    """Let MLflow create and migrate a new store's tables at ``path``."""
    client = client_for(f"sqlite:///{path}")
    client.search_experiments(max_results=1)  # MLflow creates and migrates the tables here
    engine = getattr(getattr(client._tracking_client, "store", None), "engine", None)
    if engine is not None:
        engine.dispose()


def create_or_find_experiment(client, name: str, location: str | None) -> str:
    """Create the experiment; if another process created it first, return that one's id."""
    from mlflow.exceptions import MlflowException

    try:  # described as it is created: a tag set afterwards races another sweep's
        return client.create_experiment(name, artifact_location=location, tags={NOTE_TAG: EXPERIMENT_DESCRIPTION})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # Another sweep created it between our look-up and our create (a shared server), or it was
    # deleted (MLflow keeps the name of a deleted experiment taken).
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise UserInputError(_deleted_message(name, experiment.experiment_id if experiment else "ID", client.tracking_uri))
    return experiment.experiment_id


def _deleted_message(name: str, experiment_id: str, uri: str) -> str:
    return (f"The MLflow experiment {name!r} (id {experiment_id}) in {redact(uri)} is deleted, and MLflow "
            f"keeps its name taken, so no run can be recorded in it. Fix: restore it with `mlflow experiments "
            f"restore --experiment-id {experiment_id}` (MLFLOW_TRACKING_URI set to the store), or record "
            "into another one with tracking.experiment=NAME.")


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
    schema = re.search(r"out-of-date database schema \(found version (\w+), but expected (\w+)\)", detail)
    if schema:
        return _schema_message(uri, *schema.groups())
    lowered = f"{type(exc).__name__} {detail}".lower()
    for words, what, fix in _DIAGNOSES:
        if all(word in lowered for word in words):
            break
    else:
        what, fix = "it did not answer a first request", (
            "check tracking.uri (or $MLFLOW_TRACKING_URI): start the server, fix the path or the "
            "credentials, or use tracking=local.")
    return f"Cannot reach the MLflow tracking store at {redact(uri)}: {what} ({detail}). Fix: {fix}"


def _schema_message(uri: str, found: str, expected: str) -> str:
    """The store's schema is another MLflow version's: say which side is older and the fix."""
    from importlib import metadata

    ours = f"mlflow {metadata.version('mlflow')}"
    if _known_revision(found):
        return (f"The MLflow store at {redact(uri)} was written by an older MLflow: its schema is at revision "
                f"{found}, and {ours} here needs {expected}. Fix: back the store up, then upgrade it with "
                f"`mlflow db upgrade {redact(uri)}` (an older MLflow cannot read it afterwards), or run this "
                "from the environment that wrote it, or point the tracking URI at another store.")
    return (f"The MLflow store at {redact(uri)} was written by a newer MLflow than this environment's {ours}: "
            f"its schema revision {found} is unknown here, so this MLflow cannot read it. Fix: upgrade MLflow "
            "here (pip install -U 'mlflow>=3,<4', the range precision-sweep supports), or run this from the "
            "environment that wrote the store, or point the tracking URI at another store.")


def _known_revision(revision: str) -> bool:
    """Whether this MLflow's schema migrations include ``revision`` (an older store's)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    from mlflow.store.db.utils import _get_alembic_config

    try:
        return ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(revision) is not None
    except CommandError:
        return False


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
