"""One job's evaluation sharded over Ray tasks (``runtime.shards`` greater than 1).

The job's batches (the boundaries one process uses: ``runtime.batch_size``) are dealt
round-robin to ``runtime.shards`` Ray tasks. Each task builds the runtime for the package (the
emulator, on whichever worker Ray gives it) and saves its batches in the job's
:class:`~precision_sweep.runtime.batches.BatchStore`; the job then reads them all and goes on
as one process would: its metrics and paired statistics come from the merged predictions,
which are the unsharded ones bit for bit.

The workers must see the package and ``paths.cache``: one machine, or a shared filesystem (as
a SLURM cluster has). Ray is the one the job runs in (``hydra/launcher=ray_local``), else the
one at ``RAY_ADDRESS``, else a local Ray started for the job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def evaluate_in_shards(runtime_name: str, package: Path, execution, output: str | None, x, batch_size: int, store,
                       shards: int, done: set[int]) -> list[tuple[int, int]]:
    """Evaluate the batches of ``x`` not in ``done`` in ``shards`` Ray tasks, each saving its
    batches in ``store``; returns each task's (process id, batch count)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    starts = [start for start in range(0, len(x), batch_size) if start not in done]
    samples = ray.put(x)  # once: the tasks read their batches from the object store
    task = ray.remote(num_cpus=1, max_retries=0)(_evaluate_shard)
    pending = [task.remote(runtime_name, str(package), execution, output, samples, starts[k::shards], batch_size,
                           str(store.folder))
               for k in range(shards) if starts[k::shards]]
    results = ray.get(pending)
    log.info("evaluation in %d shards: %s", len(results),
             ", ".join(f"{count} batches in process {pid}" for pid, count in results))
    return results


def _evaluate_shard(runtime_name: str, package: str, execution, output: str | None, x, starts: list[int],
                    batch_size: int, folder: str) -> tuple[int, int]:
    from precision_sweep.runtime import select_runtime
    from precision_sweep.runtime.batches import BatchStore, predict_batch

    runtime = select_runtime(runtime_name, Path(package), execution, output=output)
    store = BatchStore(Path(folder))
    for start in starts:
        store.save(start, predict_batch(runtime, x, start, batch_size))
    return os.getpid(), len(starts)
