"""``precision-sweep``: the Hydra app. One run is one job (:func:`precision_sweep.job.run_job`).

``precision-sweep -m precision=fp32,fp16,int8 target=ios15,ios16,ios17,ios18`` runs a grid;
``precision-sweep sweep=default`` runs a ready grid (``sweeps/``, the ``sweep`` config group).

The configs ship inside the package: ``precision_sweep/conf`` is the repository's ``conf/``
(a link in the source tree, copied into the wheel), and ``conf/sweep`` is ``sweeps/``. Hydra
finds them relative to this module, so the app runs from any folder, installed from a wheel
or in editable mode; ``--config-dir`` adds a folder of the user's own.
"""

from __future__ import annotations

import os

# Keep TensorFlow's C++ start-up chatter out of the terminal unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# coremltools draws a progress bar per pass pipeline; ours (runtime.progress) passes
# ``disable`` explicitly and so is not affected by this default.
os.environ.setdefault("TQDM_DISABLE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from precision_sweep import config as _config  # noqa: E402,F401  (registers the schemas)
from precision_sweep.cli.report import fail, report_user_error  # noqa: E402
from precision_sweep.errors import UserInputError  # noqa: E402

PROGRAM = "precision-sweep"


def run_task(cfg: DictConfig) -> None:
    """One job as the command runs it: a user error becomes one paragraph and exit 2."""
    from precision_sweep.job import in_multirun, run_job

    try:
        metrics = run_job(cfg)
    except UserInputError as exc:
        report_user_error(PROGRAM, exc)
        return
    if metrics is not None and metrics.get("search_budget_met") == 0.0 and not in_multirun():
        # a single search run answers as precision-pick does: exit 1 when nothing is in budget (in
        # a grid, the run's tags say it and the sweep goes on)
        fail(PROGRAM, "the search found no point within the budget on the held-out split; see the job's "
                      "search_summary tag and search.json for the best point and the layers holding it back.", code=1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run_task(cfg)


def main() -> None:
    from precision_sweep.cli import callback, pool

    try:
        _hydra_main()
    finally:
        pool.stop_workers()
    failed, total = callback.last_sweep_failures()
    if failed:
        fail(PROGRAM, f"{failed} of {total} job(s) failed; see error.txt in their runs.", code=1)


if __name__ == "__main__":
    main()
