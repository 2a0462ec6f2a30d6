"""A real single-node Ray cluster for the Ray tests: ``ray start --head`` on 127.0.0.1 with a free
GCS port, 2 CPUs, no dashboard and its own temp dir; stopped at teardown.

Two of Ray's environment switches make it a private, loopback-only cluster, and every process
that talks to it (the ``ray`` CLI, the sweep's launching process) must carry them
(:data:`RAY_TEST_ENV`): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps 127.0.0.1 as the node's
address (Ray otherwise replaces a loopback ``--node-ip-address`` with the machine's reachable IP
and listens on every interface), and ``RAY_AUTH_MODE=disabled`` keeps Ray from writing an
authentication token into the home directory.

The daemons are started in a session of their own, so teardown stops exactly this cluster by
its process group (``ray stop`` would stop every Ray process of the machine).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY_TEST_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
HOST = "127.0.0.1"


@dataclass
class RayCluster:
    address: str  # host:port of the head's GCS, for hydra.launcher.ray.init.address
    temp_dir: Path  # the cluster's sessions and logs
    process_group: int

    def worker_pids(self) -> set[int]:
        """Pids of the worker processes this cluster started (from its worker log file names)."""
        logs = self.temp_dir / "session_latest" / "logs"
        return {int(path.stem.rsplit("_", 1)[1]) for path in logs.glob("python-core-worker-*_*.log")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ray_command() -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts"]


def start_cluster(num_cpus: int = 2) -> RayCluster:
    """``ray start --head`` on 127.0.0.1; returns once the cluster answers."""
    port = free_port()
    # Short path: Ray's unix sockets live under it (108-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    command = [
        *ray_command(), "start", "--head", f"--node-ip-address={HOST}", f"--port={port}",
        f"--num-cpus={num_cpus}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
        "--disable-usage-stats", f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}",
    ]
    starter = subprocess.Popen(
        command, env={**os.environ, **RAY_TEST_ENV}, cwd=temp_dir, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output, _ = starter.communicate(timeout=180)
    cluster = RayCluster(address=f"{HOST}:{port}", temp_dir=temp_dir, process_group=starter.pid)
    if starter.returncode != 0:
        stop_cluster(cluster)
        raise RuntimeError(f"ray start failed ({starter.returncode}):\n{output[-3000:]}")
    return cluster


def stop_cluster(cluster: RayCluster, grace_s: float = 5.0) -> None:
    """SIGTERM the cluster's process group, SIGKILL what is left after ``grace_s``."""
    _signal_group(cluster.process_group, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and _group_alive(cluster.process_group):
        time.sleep(0.5)
    _signal_group(cluster.process_group, signal.SIGKILL)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    """Whether a live (not zombie) process of ``group`` remains (Linux: read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


@pytest.fixture(scope="module")
def ray_cluster() -> RayCluster:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install -e '.[ray]'")
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)
