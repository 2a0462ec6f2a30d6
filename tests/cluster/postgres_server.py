"""A shared MLflow tracking server on a real PostgreSQL, for the cluster tests.

Owns the session fixtures ``postgres_db`` (a fresh PostgreSQL cluster in a temporary folder,
listening on 127.0.0.1 only, with one role that has a password and one database it owns) and
``tracking_server`` (a real ``mlflow server`` on that database, serving artifacts itself, so
that remote clients upload through it), and their teardown. They are imported into
``conftest.py`` by one line.

The commands are those of the README's "Team set-up" section, word for word (see
:func:`setup_commands`; ``python tests/cluster/postgres_server.py`` prints them with example
values): keep them simple enough to copy. Only when this machine has no PostgreSQL (and
``apt-get install -y postgresql`` fails once) do the tests skip, saying why; an installed
PostgreSQL or an MLflow server that does not come up fails them.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLE = "mlflow"
PASSWORD = "change-me"
DATABASE = "mlflow"
SERVER_START_SECONDS = 240  # the first start creates MLflow's tables; this machine is shared


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and cannot be installed here: the tests skip, saying why."""


class PostgresStartFailed(RuntimeError):
    """PostgreSQL is installed but did not start: the tests fail, saying why."""


@dataclass
class Postgres:
    root: Path  # owned by the OS user that runs the server; holds pgdata/ (and its socket)
    bin_dir: Path
    port: int
    role: str = ROLE
    password: str = PASSWORD
    database: str = DATABASE

    @property
    def data_dir(self) -> Path:
        return self.root / "pgdata"

    @property
    def uri(self) -> str:
        return self.uri_with(self.password)

    def uri_with(self, password: str) -> str:
        return f"postgresql://{self.role}:{password}@127.0.0.1:{self.port}/{self.database}"


@dataclass
class TrackingServer:
    uri: str  # http://127.0.0.1:<port>
    backend_uri: str
    artifacts: Path
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the commands (the README's "Team set-up") ---------------------------------------------


def setup_commands(pg: Postgres) -> list[list[str]]:
    """initdb, start, create the role with its password, create its database."""
    data, port = str(pg.data_dir), str(pg.port)
    server_options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data}"
    return [
        ["initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"],
        ["pg_ctl", "-D", data, "-l", f"{data}/server.log", "-o", server_options, "-w", "start"],
        ["psql", "-h", data, "-p", port, "-U", "postgres", "-c",
         f"CREATE ROLE {pg.role} LOGIN PASSWORD '{pg.password}'"],
        ["createdb", "-h", data, "-p", port, "-U", "postgres", "-O", pg.role, pg.database],
    ]


def stop_command(pg: Postgres) -> list[str]:
    return ["pg_ctl", "-D", str(pg.data_dir), "-m", "fast", "-w", "stop"]


def mlflow_server_command(backend_uri: str, port: int, artifacts: Path) -> list[str]:
    """``--artifacts-destination``: the server stores artifacts and new experiments get
    ``mlflow-artifacts:/`` roots, so clients on other machines upload over HTTP. One worker
    process (its requests run on threads): on a small busy machine uvicorn's supervisor kills
    extra workers that start slowly, and requests they accepted are lost."""
    return ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)]


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _install_postgres_once() -> Path:
    bin_dir = postgres_bin_dir()
    if bin_dir is not None:
        return bin_dir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresUnavailable("PostgreSQL is not installed (initdb not found) and apt-get cannot be used")
    result = subprocess.run(["apt-get", "install", "-y", "postgresql"], capture_output=True, text=True, timeout=900, check=False)
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(f"apt-get install -y postgresql failed: {result.stderr.strip()[-500:]}")
    return bin_dir


def _as_server_user(command: list[str], bin_dir: Path) -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the ``postgres`` OS user then."""
    command = [str(bin_dir / command[0]) if (bin_dir / command[0]).exists() else command[0], *command[1:]]
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], bin_dir: Path) -> None:
    full = _as_server_user(command, bin_dir)
    result = subprocess.run(full, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise PostgresStartFailed(f"`{shlex.join(command)}` exited {result.returncode}: "
                                  f"{(result.stderr or result.stdout).strip()[-800:]}")


def _private_root() -> Path:
    """A folder the server's OS user owns, outside pytest's root-only (0700) temporary folders."""
    root = Path(tempfile.mkdtemp(prefix="precision-sweep-pg-"))
    if os.geteuid() == 0:
        try:
            shutil.chown(root, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresStartFailed(f"no 'postgres' OS user to run the server as ({exc})") from exc
    return root


def start_postgres() -> Postgres:
    bin_dir = _install_postgres_once()
    pg = Postgres(root=_private_root(), bin_dir=bin_dir, port=free_port())
    try:
        for command in setup_commands(pg):
            _run(command, pg.bin_dir)
    except PostgresStartFailed as exc:
        log = pg.data_dir / "server.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        stop_postgres(pg)
        raise PostgresStartFailed(f"{exc} {tail}".strip()) from None
    return pg


def stop_postgres(pg: Postgres) -> None:
    if (pg.data_dir / "postmaster.pid").exists():
        subprocess.run(_as_server_user(stop_command(pg), pg.bin_dir), capture_output=True, timeout=120, check=False)
    shutil.rmtree(pg.root, ignore_errors=True)


# -- the MLflow tracking server ------------------------------------------------------------


def start_tracking_server(backend_uri: str, root: Path) -> tuple[subprocess.Popen, TrackingServer]:
    port = free_port()
    artifacts, log = root / "mlartifacts", root / "mlflow-server.log"
    command = mlflow_server_command(backend_uri, port, artifacts)
    command[0] = str(Path(sys.executable).parent / "mlflow")  # this venv's mlflow
    with open(log, "wb") as out:
        # Its own process group: uvicorn's workers are stopped with it, by this group's id.
        process = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackingServer(uri=f"http://127.0.0.1:{port}", backend_uri=backend_uri, artifacts=artifacts, log=log)
    try:
        wait_for_health(server, process)
    except BaseException:
        stop_tracking_server(process)
        raise
    return process, server


def wait_for_health(server: TrackingServer, process: subprocess.Popen, seconds: float = SERVER_START_SECONDS) -> None:
    """Until ``GET /health`` answers OK; fail the tests if the server exits or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited {process.returncode}: {server.log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server gave no /health in {seconds:.0f} s: {server.log.read_text(errors='replace')[-2000:]}")


def stop_tracking_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


# -- the fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_db() -> Postgres:
    """A fresh PostgreSQL on 127.0.0.1:<free port>, with role ``mlflow`` (password) owning
    database ``mlflow``; stopped and deleted after the session. Skips only when PostgreSQL or
    its driver is not installed; fails when an installed one does not start."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install 'psycopg[binary]'")
    try:
        pg = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server on this machine: {exc}")
    except PostgresStartFailed as exc:
        pytest.fail(f"PostgreSQL is installed but did not start: {exc}", pytrace=False)
    yield pg
    stop_postgres(pg)


@pytest.fixture(scope="session")
def tracking_server(postgres_db: Postgres, tmp_path_factory) -> TrackingServer:
    """``mlflow server`` on 127.0.0.1:<free port>, runs in ``postgres_db``, artifacts served."""
    process, server = start_tracking_server(postgres_db.uri, tmp_path_factory.mktemp("tracking-server"))
    yield server
    stop_tracking_server(process)


def shell_line(command: list[str]) -> str:
    """A command as typed in a shell: words with spaces in double quotes (so $PWD expands)."""
    return " ".join(f'"{word}"' if " " in word else word for word in command)


def _print_readme_commands() -> None:
    """The README's commands with its example values (PostgreSQL on 5432, MLflow on 5000)."""
    pg = Postgres(root=Path("$PWD"), bin_dir=Path("."), port=5432)
    print("export PATH=/usr/lib/postgresql/15/bin:$PATH")
    for command in [*setup_commands(pg), mlflow_server_command(pg.uri, 5000, Path("$PWD/mlartifacts"))]:
        print(shell_line(command))


if __name__ == "__main__":
    _print_readme_commands()
