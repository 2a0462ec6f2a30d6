"""The launching process's pre-launch check of a grid: Hydra's basic sweeper against ours.

Before launching a batch, a Hydra sweeper composes job configs in the launching process, so a
bad override fails before any job starts. Hydra's basic sweeper composes every job of the grid;
``hydra/sweeper=precision_sweep`` (``src/hydra_plugins/precision_sweep_sweeper``, this
project's default) composes only :func:`covering_jobs`: enough jobs of the grid for every
override to appear in one. This times both checks in one process, on this project's config
tree, for grids of 12, 48 and 96 jobs, and prints the ratio. Usage::

    python benchmarks/sweep_validation.py
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hydra import compose, initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

import precision_sweep.config  # noqa: E402,F401  (registers the schemas)
from hydra_plugins.precision_sweep_sweeper.sweeper import covering_jobs  # noqa: E402

GRIDS = {
    "default (12 jobs)": {"precision": ["fp32", "fp16", "int8"], "target": ["ios15", "ios16", "ios17", "ios18"]},
    "48 jobs": {"precision": ["fp32", "fp16", "int8"], "target": ["ios15", "ios16", "ios17", "ios18"],
                "compute_units": ["cpu_only", "cpu_and_gpu", "all", "cpu_and_ne"]},
    "96 jobs": {"precision": ["fp32", "fp16", "int8"], "target": ["ios15", "ios16", "ios17", "ios18"],
                "compute_units": ["cpu_only", "cpu_and_gpu", "all", "cpu_and_ne"], "device": ["m1", "m5"]},
}


def main() -> None:
    with initialize_config_module(config_module="precision_sweep.conf", version_base="1.3"):
        master = compose(config_name="config", return_hydra_config=True)
        loader = GlobalHydra.instance().hydra.config_loader

        def check(jobs) -> float:
            start = time.perf_counter()
            for job in jobs:
                loader.load_sweep_config(master_config=master, sweep_overrides=list(job))
            return time.perf_counter() - start

        for name, axes in GRIDS.items():
            batch = [[f"{key}={value}" for key, value in zip(axes, values)]
                     for values in itertools.product(*axes.values())]
            cover = covering_jobs(batch)
            every, covering = check(batch), check(cover)
            print(f"{name}: basic sweeper composes {len(batch)} jobs in {every:5.2f} s; "
                  f"ours composes {len(cover)} in {covering:4.2f} s; {covering / every:4.2f}x the time")


if __name__ == "__main__":
    main()
