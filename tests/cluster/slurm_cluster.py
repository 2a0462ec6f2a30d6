"""A real single-node SLURM cluster on this machine, for the cluster tests.

Owns everything the cluster needs and nothing else: a private folder (outside pytest's 0700
temporary folders, because munged wants its socket folder executable by all) holding a munge
key, a ``munged`` on a private socket, a ``slurm.conf`` with one node (``localhost``, with the
CPUs and memory ``slurmd -C`` reports) in one partition, the daemons' state and logs; then
a private MariaDB and ``slurmdbd`` (job accounting: submitit reads job states with ``sacct``,
and without it a cancelled job, which leaves no result file, is waited for forever), then
``slurmctld`` and ``slurmd``, all in the foreground as child processes of the tests and killed
by their pids at the end. Nothing system-wide is touched (no /etc/slurm, no /run/munge, no
system database), except that the Debian packages are installed with apt-get when missing.

Every command a test runs against the cluster must get :attr:`SlurmCluster.env` (``SLURM_CONF``
points at this cluster's configuration).

Two outcomes besides a running cluster: :class:`ClusterUnavailable` when SLURM cannot be run
here at all (its packages are missing and cannot be installed, or the tests do not run as root):
the tests skip with that reason; :class:`ClusterStartFailed` when everything is installed but a
daemon does not come up in :data:`START_SECONDS`: the tests were asked for and fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER = "precisionsweep"
PARTITION = "debug"
NODE = "localhost"
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmdbd", "sinfo", "sbatch", "squeue", "scancel", "srun",
           "sacct", "sacctmgr", "mariadbd", "mariadb-install-db")
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
START_SECONDS = 90


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run on this machine (packages missing and not installable, not root): skip, saying why."""


class ClusterStartFailed(RuntimeError):
    """SLURM is installed but a daemon did not come up: the cluster tests fail, with its logs."""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of every command run against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def node_state(self) -> str:
        result = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return result.stdout.strip() if result.returncode == 0 else f"sinfo failed: {result.stderr.strip()}"

    def queue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job SLURM still knows about (array tasks as ``A_i``)."""
        result = self.run("squeue", "-h", "-o", "%i %T")
        return [tuple(line.split()) for line in result.stdout.splitlines() if line.strip()]

    def wait_until_queue_empty(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while self.queue():
            if time.time() > deadline:
                raise TimeoutError(f"SLURM jobs still queued after {timeout} s: {self.queue()}")
            time.sleep(1)

    def logs(self) -> str:
        """The tail of each daemon's log, for assertion messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmdbd.log", "mariadb.err", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is left, kill the daemons this cluster started (by pid), drop the folder."""
        if "slurmctld" in self.processes and "slurmd" in self.processes:
            self.run("scancel", "--partition", self.partition, check=False)
            try:
                self.wait_until_queue_empty(timeout=60)  # slurmd ends the jobs' processes itself
            except (TimeoutError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            process = self.processes.pop(name, None)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def ensure_packages() -> None:
    """Install the Debian packages with apt-get, once, if any of their commands is missing."""
    if all(shutil.which(command) for command in COMMANDS):
        return
    command = ["apt-get", "install", "-y", *PACKAGES]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable(f"SLURM is not installed and this is not a root Debian system to run {' '.join(command)}")
    install = subprocess.run(command, capture_output=True, text=True, check=False,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    missing = [name for name in COMMANDS if not shutil.which(name)]
    if missing:
        raise ClusterUnavailable(f"{' '.join(command)} did not provide {missing}: {install.stderr[-800:]}")


def node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine as ``slurmd -C`` reports them."""
    report = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    cpus = int(re.search(r"\bCPUs=(\d+)", report).group(1))
    memory = int(re.search(r"\bRealMemory=(\d+)", report).group(1))
    return cpus, memory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_dbd_conf(root: Path, dbd_port: int, db_port: int) -> Path:
    """slurmdbd.conf: accounting into the private MariaDB (slurmdbd wants it 0600)."""
    lines = [
        "DbdHost=localhost",
        f"DbdPort={dbd_port}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={root / 'munge.sock'}",
        f"PidFile={root / 'slurmdbd.pid'}",
        f"LogFile={root / 'slurmdbd.log'}",
        "DebugLevel=info",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={db_port}",
        "StorageUser=root",
        "StorageLoc=slurm_acct_db",
    ]
    conf = root / "slurmdbd.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    return conf


def write_conf(root: Path, cpus: int, memory_mb: int, dbd_port: int) -> Path:
    """The cluster's slurm.conf: one node, one default partition, state and logs under ``root``."""
    for folder in ("ctld", "slurmd"):
        (root / folder).mkdir()
    lines = [
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={NODE}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge.sock'}",
        f"StateSaveLocation={root / 'ctld'}",
        f"SlurmdSpoolDir={root / 'slurmd'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={dbd_port}",
        f"AccountingStoragePass={root / 'munge.sock'}",  # the munge socket of slurmdbd connections
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "KillWait=15",
        "MinJobAge=300",
        "SchedulerType=sched/backfill",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start(cluster: SlurmCluster, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
    with open(cluster.root / f"{name}.out", "w") as log:
        cluster.processes[name] = subprocess.Popen(command, env={**cluster.env, **(env or {})}, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True)


def _start_munged(cluster: SlurmCluster) -> None:
    root = cluster.root
    key = root / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o400)
    _start(cluster, "munged", ["munged", "--foreground", f"--socket={root / 'munge.sock'}", f"--key-file={key}",
                               f"--log-file={root / 'munged.log'}", f"--pid-file={root / 'munged.pid'}",
                               f"--seed-file={root / 'munged.seed'}"])
    _wait(cluster, lambda: (root / "munge.sock").exists(), "munged did not create its socket")


def _start_accounting(cluster: SlurmCluster, dbd_port: int) -> None:
    """A private MariaDB on a free local port, then slurmdbd on it, and this cluster registered."""
    root, db_port = cluster.root, _free_port()
    install = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={root / 'db'}", "--user=root",
                              "--auth-root-authentication-method=normal", "--skip-test-db"], capture_output=True, text=True,
                             check=False)
    if install.returncode != 0:
        cluster.stop()
        raise ClusterStartFailed(f"mariadb-install-db failed: {install.stdout[-500:]}{install.stderr[-500:]}")
    _start(cluster, "mariadbd", ["mariadbd", "--no-defaults", f"--datadir={root / 'db'}", "--user=root",
                                 f"--socket={root / 'mariadb.sock'}", f"--port={db_port}", "--bind-address=127.0.0.1",
                                 f"--pid-file={root / 'mariadb.pid'}", f"--log-error={root / 'mariadb.err'}"])
    _wait(cluster, lambda: (root / "mariadb.sock").exists(), "mariadbd did not open its socket")
    dbd_conf = write_dbd_conf(root, dbd_port, db_port)
    _start(cluster, "slurmdbd", ["slurmdbd", "-D"], env={"SLURM_CONF": str(cluster.conf),
                                                                  "SLURMDBD_CONF": str(dbd_conf)})
    _wait(cluster, lambda: cluster.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
          "slurmdbd did not answer sacctmgr")
    cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER)


def _wait(cluster: SlurmCluster, ready, what: str, timeout: float = START_SECONDS) -> None:
    deadline = time.time() + timeout
    while not ready():
        dead = [name for name, process in cluster.processes.items() if process.poll() is not None]
        if dead or time.time() > deadline:
            outputs = "\n".join((cluster.root / f"{name}.out").read_text(errors="replace")[-800:] for name in cluster.processes)
            reason = f"{what} ({'exited: ' + ', '.join(dead) if dead else f'after {timeout} s'})"
            logs = cluster.logs()
            cluster.stop()
            raise ClusterStartFailed(f"{reason}\n{outputs}\n{logs}")
        time.sleep(0.5)


def start_cluster() -> SlurmCluster:
    """Install the packages if needed, start munged, MariaDB, slurmdbd, slurmctld and slurmd, and
    wait for an idle node. Raises :class:`ClusterUnavailable` (skip) or :class:`ClusterStartFailed` (fail)."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmd/slurmctld/munged as SlurmUser=root needs root")
    ensure_packages()
    root = Path(tempfile.mkdtemp(prefix="precision-sweep-slurm-"))
    root.chmod(0o755)  # munged: the socket's folder must be executable by all
    cpus, memory = node_resources()
    dbd_port = _free_port()
    cluster = SlurmCluster(root=root, conf=write_conf(root, cpus, memory, dbd_port))
    _start_munged(cluster)
    _start_accounting(cluster, dbd_port)
    _start(cluster, "slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", str(cluster.conf)])
    _wait(cluster, lambda: cluster.run("sinfo", "-h", check=False).returncode == 0, "slurmctld did not answer sinfo")
    _start(cluster, "slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(cluster.conf)])
    _wait(cluster, lambda: cluster.node_state() == "idle", f"node {NODE} did not become idle")
    return cluster
