"""A long evaluation's progress: a bar in a terminal, else a line in the job's log.

:class:`SampleProgress` counts the samples of one pass over the test set (the program's
evaluation, the TF baseline). In a terminal it draws tqdm's bar; where stderr is a file (a
SLURM job's log, a Hydra job's log, a worker's pipe) it logs tqdm's own meter line every
``every`` seconds and at the end: samples done of the total, elapsed and remaining time,
throughput. Samples read back from an earlier run's saved batches count as done, not in the
throughput.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 30.0


class SampleProgress:
    """Progress of one pass over ``total`` samples (see the module docstring)."""

    def __init__(self, desc: str, total: int, bar: bool = True, every: float = LOG_EVERY_SECONDS,
                 clock=time.monotonic):
        from tqdm.auto import tqdm

        self.desc, self.total, self.every, self.clock = desc, total, every, clock
        # disable=None: no bar when stderr is not a terminal (no carriage returns in a log file)
        self.bar = tqdm(total=total, desc=desc, disable=None if bar else True, unit="img", leave=False)
        self.start = self.last = clock()
        self.done = self.evaluated = 0

    def update(self, samples: int, evaluated: bool = True) -> None:
        """``samples`` more done (``evaluated`` false: read back, not computed)."""
        self.done += samples
        if evaluated:
            self.evaluated += samples
        else:
            self.start = self.clock()  # the throughput counts computed samples only
            self.evaluated = 0
        self.bar.update(samples)
        now = self.clock()
        if self.bar.disable and now - self.last >= self.every and self.done < self.total:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """tqdm's meter: ``desc: 40%|...| 2000/5000 [00:10<00:15, 200.00img/s]`` (no bar drawn)."""
        from tqdm import tqdm

        elapsed = (self.clock() if now is None else now) - self.start
        rate = self.evaluated / elapsed if elapsed > 0 and self.evaluated else None
        return tqdm.format_meter(self.done, self.total, elapsed, prefix=self.desc, unit="img", rate=rate, ncols=0)

    def close(self) -> None:
        self.bar.close()
        if self.bar.disable and self.total >= 0:
            log.info("%s", self.line())
