"""Hydra's basic sweeper with a cheaper pre-launch check (``hydra/sweeper=precision_sweep``).

Before launching a batch, Hydra's basic sweeper composes every job's config in the launching
process, to fail on a bad override before any job starts. Composition takes about 0.27 s per
job with this project's config tree (2-core machine), serially: a 96-job grid waited 26 s
before its first job, on every launcher, and each job composes its config again where it
runs. :mod:`.sweeper` composes only as many jobs of the batch as it takes for every override
of the batch to appear in one of them (:func:`.sweeper.covering_jobs`): for a grid, about
as many as its longest axis. :mod:`.config` registers the sweeper's config.
"""

__version__ = "0.1.0"
