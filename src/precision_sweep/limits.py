"""Per-job limits, so that a job that runs too long or needs too much memory fails alone.

``timeout_minutes`` arms SIGALRM for the job (it raises :class:`JobTimeout`, again every half
second until the job stops, since Python drops an exception raised inside a weakref callback).
``max_memory_gb`` caps how much the job may grow the process's resident memory (RSS) over
what it held when the job started: a watchdog thread reads the RSS every 50 ms and, past the
allowance, interrupts the main thread with SIGUSR1, which raises :class:`JobMemoryExceeded`. Resident memory is what the machine runs out of; an address-space limit
(RLIMIT_AS) was tried first and failed normal jobs, since every new thread reserves tens of
MiB of address space it never uses. A single allocation larger than the machine's free
memory can still be killed by the kernel before the watchdog looks.
SIGTERM (a cluster scheduler cancelling the job) raises :class:`JobTerminated` and SIGINT
(Ctrl-C) raises KeyboardInterrupt inside :func:`stops_raise`, which the job holds from the moment
its run exists, so the run is closed as KILLED instead of left RUNNING. A stop is raised again
every few seconds until the job has left that block, since a library's bare ``except:``
(coremltools has some) can swallow it once. :func:`stop_in_chain` finds a stop that a library
turned into another error on its way out (Optuna's journal lock: FileNotFoundError), and the
block remembers a stop it received, for a library that swallowed it and then failed on an
error of its own that does not chain it. Everything
is restored when the job ends. POSIX
only; signals need the main thread, so a job run in another thread gets neither the timeout
nor the memory cap.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class JobLimitExceeded(BaseException):
    """A job limit was hit. A BaseException, like KeyboardInterrupt, because the signal that
    raises it can land anywhere, including inside a library's ``except Exception`` (importing
    coremltools is full of them), which must not swallow it. The run is recorded FAILED."""


class JobTimeout(JobLimitExceeded):
    """The job ran past ``limits.timeout_minutes``."""


class JobTerminated(BaseException):
    """The job's process received SIGTERM."""


class JobMemoryExceeded(JobLimitExceeded):
    """The job's resident memory grew past ``limits.max_memory_gb``."""


WATCH_INTERVAL_SECONDS = 0.05
# A limit's signal is repeated this often until the job has stopped (see job_limits).
RETRY_SECONDS = 0.5


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resident_bytes() -> int:
    """The process's resident memory (VmRSS), 0 where /proc is missing."""
    return _status_bytes("VmRSS") or 0


def peak_resident_bytes() -> int:
    """The process's peak resident memory so far (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


class _MemoryWatch(threading.Thread):
    """Signals the main thread once the RSS has grown past ``allowance`` bytes."""

    def __init__(self, allowance: int):
        super().__init__(name="precision-sweep-memory-watch", daemon=True)
        self.allowance = allowance
        self.baseline = resident_bytes()
        self.grown = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = WATCH_INTERVAL_SECONDS
        while not self._stop_event.wait(interval):
            self.grown = max(self.grown, resident_bytes() - self.baseline)
            if self.grown > self.allowance:
                # again every RETRY_SECONDS until the job ends: Python ignores an exception
                # raised inside a weakref callback or __del__
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                interval = RETRY_SECONDS

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# A stop that has not left the job's block after this long was swallowed: it is raised again.
STOP_RETRY_SECONDS = 3.0
STOPS = (KeyboardInterrupt, SystemExit, JobTerminated)


def stop_in_chain(exc: BaseException) -> BaseException | None:
    """The stop (Ctrl-C, SIGTERM, exit) that ``exc`` is or that it was raised while handling,
    else None: a library's cleanup can turn a stop into another error (Optuna's journal lock
    raises FileNotFoundError when the stop lands while it releases its lock), and the job was
    still stopped, not failed."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, STOPS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _Stops:
    """The SIGTERM/SIGINT handler of :func:`stops_raise`: raises the stop, and from then on a
    watcher thread signals the main thread again every ``STOP_RETRY_SECONDS`` until the block is
    left (a library's bare ``except:`` may have swallowed the first one)."""

    def __init__(self):
        self.received: int | None = None
        self._watch: threading.Thread | None = None
        self._left = threading.Event()  # set once the block is left: nothing is raised any more

    def handle(self, signum, frame):
        if self._left.is_set():
            return
        if self.received is None:
            self.received = signum
            self._watch = threading.Thread(target=self._repeat, name="precision-sweep-stop-repeat", daemon=True)
            self._watch.start()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise JobTerminated("the job received SIGTERM")

    def _repeat(self) -> None:
        main = threading.main_thread().ident
        while not self._left.wait(STOP_RETRY_SECONDS):
            signal.pthread_kill(main, self.received)

    def stop(self) -> BaseException | None:
        """The stop this block received (KeyboardInterrupt or JobTerminated), else None: what
        ended the job when a library swallowed the stop and failed on another error that does
        not chain it (coremltools' bare ``except:`` continues with a half-set state)."""
        if self.received is None:
            return None
        if self.received == signal.SIGINT:
            return KeyboardInterrupt()
        return JobTerminated("the job received SIGTERM")

    def leave(self) -> None:
        self._left.set()
        if self._watch is not None:
            self._watch.join()


@contextlib.contextmanager
def stops_raise():
    """While the block runs, SIGTERM raises :class:`JobTerminated` and SIGINT KeyboardInterrupt
    (main thread only), raised again until the block is left, so a job cancelled by its
    scheduler (SLURM's scancel or time limit) or by Ctrl-C closes its run KILLED. A launcher may
    have its own SIGTERM handler (submitit's only logs the signal, and SLURM kills the job
    seconds later): it is restored when the block ends. Yields the block's :class:`_Stops`,
    whose ``stop()`` says afterwards whether a stop was received."""
    stops = _Stops()
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {signum: signal.signal(signum, stops.handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stops
    finally:
        stops.leave()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def job_limits(timeout_minutes: float | None = None, max_memory_gb: float | None = None):
    main = threading.current_thread() is threading.main_thread()
    restore: list = []
    active = threading.Event()  # set while the limits apply; handlers do nothing once cleared
    active.set()
    if main and timeout_minutes:
        def _timeout(signum, frame):
            if not active.is_set():
                return
            # Python ignores an exception raised while it runs a weakref callback or __del__
            # (seen: inside SQLAlchemy's garbage-collection hook), so fire again shortly.
            signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
            raise JobTimeout(f"the job ran longer than limits.timeout_minutes={timeout_minutes}")

        restore.append((signal.SIGALRM, signal.signal(signal.SIGALRM, _timeout)))
        signal.setitimer(signal.ITIMER_REAL, max(0.1, float(timeout_minutes) * 60))
    watch = None
    if main and max_memory_gb:
        watch = _MemoryWatch(int(float(max_memory_gb) * 1024**3))

        def _exceeded(signum, frame):
            if not active.is_set():
                return
            raise JobMemoryExceeded(
                f"the job grew the process's resident memory by {watch.grown / 1024**3:.2f} GiB, "
                f"past limits.max_memory_gb={max_memory_gb}"
            )

        restore.append((signal.SIGUSR1, signal.signal(signal.SIGUSR1, _exceeded)))
        watch.start()
    try:
        yield
    finally:
        active.clear()
        if watch is not None:
            watch.stop()
        if main and timeout_minutes:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in restore:
            signal.signal(signum, handler)
