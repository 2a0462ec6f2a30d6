"""A sweep worker's thread share: the environment variables that size TensorFlow's, OpenMP's,
the BLAS libraries' and numba's thread pools. Parallel launchers (joblib, Ray) give each worker
its share of the cores through them, a value the user set wins, and every job's run records
the share it ran with."""

from __future__ import annotations

import os

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def share_env(threads: int) -> dict[str, str]:
    """The variables giving a worker ``threads`` threads, each one as the process already has it
    when set; TensorFlow's inter-op pool gets one thread."""
    env = {key: os.environ.get(key) or str(max(1, threads)) for key in THREAD_VARIABLES}
    env["TF_NUM_INTEROP_THREADS"] = os.environ.get("TF_NUM_INTEROP_THREADS") or "1"
    return env


def thread_share() -> str:
    """``"tf 1, omp 1, numba 1 of 2 cores"``: this process's thread counts (a library with no
    count set uses every core)."""
    cores = os.cpu_count() or 1
    counts = {"tf": "TF_NUM_INTRAOP_THREADS", "omp": "OMP_NUM_THREADS", "numba": "NUMBA_NUM_THREADS"}
    return ", ".join(f"{name} {os.environ.get(key, cores)}" for name, key in counts.items()) + f" of {cores} cores"
