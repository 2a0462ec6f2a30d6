"""The basic sweeper, checking a batch by composing a covering subset of its jobs.

Hydra's check composes each job of a batch (:meth:`Sweeper.validate_batch_is_legal`). A bad
override (an unknown config group option, a key the schema lacks, a value of the wrong type)
fails the composition of every job that carries it, so composing one job per distinct
override finds it just as well. The jobs composed are jobs of the batch itself, so the check
cannot fail where every job would have composed. What it can miss is a failure that only a
combination of swept values causes (a key that exists only under some values of another swept
group): that job then fails where it runs, recorded FAILED with its error like any failing job.
"""

from __future__ import annotations

from typing import List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


def covering_jobs(batch: Sequence[Sequence[str]]) -> List[Sequence[str]]:
    """Jobs of ``batch`` such that every override string of the batch is in at least one,
    chosen greedily (each next job adds the most overrides not yet covered; ties keep batch
    order). For a full grid this is as many jobs as the longest axis has values; a batch of
    jobs without overrides gives its first job, so a non-empty batch always has one composed."""
    uncovered = {override for job in batch for override in job}
    chosen: List[Sequence[str]] = []
    while uncovered:
        best = max(batch, key=lambda job: len(uncovered.intersection(job)))
        chosen.append(best)
        uncovered.difference_update(best)
    return chosen or list(batch[:1])


class CoveringSweeper(BasicSweeper):
    """Hydra's :class:`BasicSweeper` (grids, ``params``, ``max_batch_size``), whose pre-launch
    check composes :func:`covering_jobs` of each batch instead of every job."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        super().validate_batch_is_legal(covering_jobs(batch))
