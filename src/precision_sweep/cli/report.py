"""The one user-error reporter of every command: one paragraph on stderr, then exit.

Library code raises :class:`~precision_sweep.errors.UserInputError` (what is wrong, where, how
to fix it); the entry points catch it and call :func:`report_user_error`.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

EXIT_USER_ERROR = 2


def fail(program: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``program: message`` as one wrapped paragraph on stderr and exit with ``code``."""
    # Lines break between words only: a path or URI stays whole, so it can be copied (a break at
    # a hyphen inside /tmp/pytest-of-root/... split a path in two).
    paragraph = textwrap.fill(" ".join(str(message).split()), width=100, break_on_hyphens=False,
                              break_long_words=False)
    print(f"{program}: {paragraph}", file=sys.stderr, flush=True)
    sys.exit(code)


def report_user_error(program: str, exc: BaseException) -> NoReturn:
    """Report a user error (``precision-sweep: error: ...``) and exit with code 2."""
    fail(program, f"error: {exc}")


def default_uri() -> str:
    """The store the reading commands use without --tracking-uri: $MLFLOW_TRACKING_URI, else
    ./outputs/mlflow.db (where precision-sweep writes by default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'outputs' / 'mlflow.db'}"


def open_run(program: str, tracking_uri: str | None, run_id: str, what: str, first: str = "Run a sweep first"):
    """``(client, run)`` of ``run_id`` in the store ``tracking_uri`` (default: $MLFLOW_TRACKING_URI
    or ./outputs/mlflow.db); a missing store or run fails with one paragraph naming the fix
    (``what`` says which run id to pass)."""
    from precision_sweep.errors import UserInputError
    from precision_sweep.tracking import store

    uri = store.absolute_uri(tracking_uri or default_uri())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        fail(program, f"error: no MLflow store at {uri}. {first} or pass --tracking-uri.")
    try:
        client = store.client_for(uri)
    except UserInputError as exc:  # a store of another MLflow version, a file that is no database
        fail(program, f"error: {exc}")
    try:
        return client, client.get_run(run_id)
    except Exception:
        fail(program, f"error: no run with id {run_id!r} in {uri}. Pass {what}.")
