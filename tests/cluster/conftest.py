"""Fixtures of the cluster tests: one real single-node SLURM cluster per test session
(:mod:`slurm_cluster`). Its tests skip, with the reason, only when SLURM cannot run on this
machine (a package missing); installed daemons that do not come up fail them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # slurm_cluster, next to this file

from slurm_cluster import ClusterStartFailed, ClusterUnavailable, SlurmCluster, start_cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]' (hydra-submitit-launcher)")
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM cluster on this machine: {exc}")
    except ClusterStartFailed as exc:
        pytest.fail(f"SLURM is installed but its cluster did not start: {exc}", pytrace=False)
    yield cluster
    cluster.stop()

from postgres_server import postgres_db, tracking_server  # noqa: E402,F401  (PostgreSQL + MLflow server)
