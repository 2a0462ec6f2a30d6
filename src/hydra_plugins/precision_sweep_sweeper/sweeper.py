"""The basic sweeper, checking a batch by composing a covering subset of its jobs.

Hydra's check composes each job of a batch (:meth:`Sweeper.validate_batch_is_legal`). A bad
override (an unknown config group option, a key the schema lacks, a value of the wrong type)
fails the composition of every job that carries it, so composing one job per distinct
override finds it just as well. The jobs composed are jobs of the batch itself, so the check
cannot fail where every job would have composed. A job that does not compose is reported in one
paragraph naming the job and, where one override alone breaks it, that override (the common case:
a key set across a grid of recipes of which only some have it, such as
``precision.weight_palettization.nbits`` beside ``precision=int8``). What the check can miss is a
failure that only a combination of swept values causes in a job it did not compose: that job then
fails where it runs, recorded FAILED with its error like any failing job.
"""

from __future__ import annotations

from typing import List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException


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
        for job in covering_jobs(batch):
            try:
                super().validate_batch_is_legal([job])
            except ConfigCompositionException:
                raise  # Hydra's own message names the option or key (e.g. "Could not find 'precision/fp99'")
            except Exception as exc:  # noqa: BLE001 - OmegaConf's assertion on a key under a null node
                raise ConfigCompositionException(self._cannot_compose(job, exc)) from None

    def _cannot_compose(self, job: Sequence[str], exc: Exception) -> str:
        """One paragraph: the job, the override that breaks it alone (if one does) and the fix."""
        parsed = OverridesParser.create().parse_overrides(list(job))
        choices = [o.input_line for o in parsed if "." not in o.key_or_group]
        culprit = None
        for override in parsed:
            if "." not in override.key_or_group:
                continue
            try:
                super().validate_batch_is_legal([[*choices, override.input_line]])
            except Exception:  # noqa: BLE001
                culprit = override
                break
        where = " ".join(job)
        if culprit is None:
            return (f"The sweep's job `{where}` cannot be composed ({type(exc).__name__}: {exc}). Check its overrides "
                    "against the config groups they set; nothing was run.")
        key = culprit.key_or_group
        group = key.split(".")[0]
        chosen = next((c for c in choices if c.startswith(group + "=")), f"{group}=<default>")
        return (f"The sweep pairs `{chosen}` with `{culprit.input_line}`, which sets a key that {chosen} does "
                f"not have (its `{key.rsplit('.', 1)[0]}` is empty or missing). An override inside a config group "
                f"applies to every option swept with it. Sweep that key in its own grid with the options that have "
                f"it (e.g. `precision-sweep -m {chosen.split('=')[0]}=<option with {key.split('.')[1]}> "
                f"{culprit.input_line}`), or list whole recipes instead. Nothing was run.")
