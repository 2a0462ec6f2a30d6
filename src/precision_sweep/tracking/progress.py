"""Overall sweep progress in the launching terminal: done, failed, skipped, and the ETA.

It polls the tracking store for the parent's children, so it works the same for every
launcher (in-process, joblib workers, SLURM jobs): the store is the one place that all jobs
report to.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from omegaconf import DictConfig


def count_jobs(config: DictConfig) -> int | None:
    """Number of jobs a multirun will launch, from its sweep overrides (basic sweeper rules)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        arguments = list(config.hydra.overrides.task)
        params = config.hydra.sweeper.get("params") or {}
        arguments += [f"{key}={value}" for key, value in params.items()]
        total = 1
        seen = set()
        for override in OverridesParser.create().parse_overrides(arguments):
            key = override.get_key_element()
            if key in seen:
                continue
            seen.add(key)
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    except Exception:  # an unknown sweeper: show counts without a total
        return None


LIVE_LINE_ENV = "PRECISION_SWEEP_LIVE_LINE"  # set while a terminal shows the sweep's live line


def job_bar_wanted(requested: bool) -> bool:
    """Whether a job draws its per-batch progress bar: not under the sweep's live line (one
    live line per terminal; bars from several processes would fight over the cursor)."""
    return bool(requested) and not os.environ.get(LIVE_LINE_ENV)


class _StartOnAClearedLine(logging.Formatter):
    """A console formatter that returns to column 0 and clears the line before each record,
    so that a record overwrites the sweep's live line instead of being glued to its end (the
    live line is redrawn below it on the next tick)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return "\r\x1b[K" + self.inner.format(record)


def keep_log_lines_off_the_live_line(progress: "SweepProgress | None") -> None:
    """Call after a job's logging is configured (Hydra reconfigures it for every job). In the
    process that draws the live line, its log records go through tqdm (written above the line,
    which is redrawn at once); in a worker sharing the terminal, console records start on a
    cleared line."""
    if not os.environ.get(LIVE_LINE_ENV):
        return
    if progress is not None and progress._bar is not None:
        progress.redirect_logging()
        return
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and getattr(stream, "isatty", lambda: False)() \
                and not isinstance(handler.formatter, _StartOnAClearedLine):
            handler.setFormatter(_StartOnAClearedLine(handler.formatter))


class SweepProgress:
    """Overall progress, polled from the store by a background thread.

    On a terminal: one live line (tqdm) kept below the log, with the launching process's log
    records written above it (tqdm's logging redirect), and the jobs' own batch bars off. When
    the output is not a terminal (a file, a pipe, a scheduler's log): a plain line each time
    the counts change, no carriage returns or escape codes. Either way the final counts are
    printed once, when the sweep ends.
    """

    def __init__(self, client, experiment_id: str, parent_run_id: str, total: int | None, interval: float = 2.0,
                 stream=None):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.total = total
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._bar = None
        self._redirects: list = []
        self._last_line = ""
        self._started = time.monotonic()

    def start(self) -> "SweepProgress":
        if self.interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc="sweep", unit="job", file=self.stream, leave=False, disable=False,
                             bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} jobs [{elapsed}<{remaining}]")
            self.redirect_logging()
            os.environ[LIVE_LINE_ENV] = "1"
        self._thread.start()
        return self

    def redirect_logging(self) -> None:
        """Send the root logger's console records through tqdm (above the live line); again
        after each reconfiguration of logging."""
        from tqdm.contrib.logging import logging_redirect_tqdm

        # A new redirect over the handlers logging has now. The earlier ones stay open (closing
        # one, or letting it be collected, restores the handlers it replaced: a configuration
        # that no longer applies); stop() closes them all, newest first.
        redirect = logging_redirect_tqdm()
        redirect.__enter__()
        self._redirects.append(redirect)

    def counts(self) -> dict[str, int]:
        from precision_sweep.tracking.summary import child_runs, run_status

        counts = {"FINISHED": 0, "FAILED": 0, "SKIPPED": 0, "KILLED": 0, "RUNNING": 0}
        for run in child_runs(self.client, self.experiment_id, self.parent_run_id):
            status = run_status(run)
            counts[status] = counts.get(status, 0) + 1
        return counts

    @staticmethod
    def describe(counts: dict[str, int]) -> str:
        return (f"ok {counts['FINISHED']}, failed {counts['FAILED'] + counts['KILLED']}, "
                f"skipped {counts['SKIPPED']}, running {counts['RUNNING']}")

    def _line(self, counts: dict[str, int]) -> str:
        done = counts["FINISHED"] + counts["FAILED"] + counts["SKIPPED"] + counts["KILLED"]
        total = "?" if self.total is None else str(self.total)
        return f"sweep: {done}/{total} jobs done ({self.describe(counts)})"

    def _render(self) -> None:
        counts = self.counts()
        if self._bar is not None:
            self._bar.n = counts["FINISHED"] + counts["FAILED"] + counts["SKIPPED"] + counts["KILLED"]
            self._bar.set_description_str(f"sweep: {self.describe(counts)}", refresh=False)
            self._bar.refresh()
            return
        line = self._line(counts)
        if line != self._last_line:
            self._last_line = line
            print(line, file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._render()
            except Exception:  # the store may be briefly locked; try again next tick
                continue

    def stop(self) -> None:
        """Stop polling and print the final counts once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            counts = self.counts()
        except Exception:
            counts = None
        if self._bar is not None:
            self._bar.close()  # leave=False: the live line goes; the final line below replaces it
            while self._redirects:
                self._redirects.pop().__exit__(None, None, None)
            self._bar = None
            os.environ.pop(LIVE_LINE_ENV, None)
        if counts is not None:
            minutes, seconds = divmod(int(time.monotonic() - self._started), 60)
            line = f"{self._line(counts)} in {minutes}:{seconds:02d}"
            print(line, file=self.stream, flush=True)
