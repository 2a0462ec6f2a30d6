"""Per-job limits, so that a job that runs too long or needs too much memory fails alone.

``timeout_minutes`` arms SIGALRM for the job (it raises :class:`JobTimeout`);
``max_memory_gb`` lowers the process's address-space soft limit for the job's duration (an
allocation past it raises MemoryError in numpy). SIGTERM (a cluster scheduler cancelling the
job) raises :class:`JobTerminated` so the run is closed as KILLED instead of left RUNNING.
Everything is restored when the job ends. POSIX only; signals need the main thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class JobTimeout(TimeoutError):
    """The job ran past ``limits.timeout_minutes``."""


class JobTerminated(BaseException):
    """The job's process received SIGTERM."""


@contextlib.contextmanager
def job_limits(timeout_minutes: float | None = None, max_memory_gb: float | None = None):
    main = threading.current_thread() is threading.main_thread()
    restore: list = []
    if main and hasattr(signal, "SIGTERM"):
        def _terminated(signum, frame):
            raise JobTerminated("the job received SIGTERM")

        restore.append((signal.SIGTERM, signal.signal(signal.SIGTERM, _terminated)))
    if main and timeout_minutes:
        seconds = max(1, int(round(float(timeout_minutes) * 60)))

        def _timeout(signum, frame):
            raise JobTimeout(f"the job ran longer than limits.timeout_minutes={timeout_minutes}")

        restore.append((signal.SIGALRM, signal.signal(signal.SIGALRM, _timeout)))
        signal.alarm(seconds)
    memory_restore = None
    if max_memory_gb:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = int(float(max_memory_gb) * 1024**3)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        memory_restore = (soft, hard)
    try:
        yield
    finally:
        if main and timeout_minutes:
            signal.alarm(0)
        for signum, handler in restore:
            signal.signal(signum, handler)
        if memory_restore is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, memory_restore)
