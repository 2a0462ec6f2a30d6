"""What the mixed-precision search costs and what it buys, on the demo.

The demo search (``precision=search`` of digits_mlp_sensitive on digits_shifted at iOS18,
cpu_only, the drift diagnosis off) through the real CLI, in a fresh temporary directory:

  1. cold: an empty ``paths.cache`` (the model trains, every package is built);
  2. warm: the same cache, a fresh tracking store (the sensitivity table is read from its cache
     file, the packages are cached, the study starts afresh since ``resume`` is off);
  3. the uniform recipes, once, on the same cache: ``-m precision=palettize
     precision.weight_palettization.nbits=<n>`` for n = 4, 6, 8 (one sweep each, to name them)
     and ``-m precision=int8,int4_per_block``, and the pick rule (``pick.max_drop``/``pick.rule`` defaults: 1 pp, confident) over them.

Printed: the CPU model; per search run the wall seconds, ``search_evaluations``,
``search_exhaustive_evaluations`` and their ratio, the chosen size, the delta on the search
split (``search_delta_pp``) and on the held-out split (``delta_pp``, with the CI's lower bound);
the smallest uniform recipe within budget and the ratio search size / that size. The uniform
recipes are measured on the whole test split, the search's choice on its held-out half.

    .venv/bin/python benchmarks/search_cost.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = ["model=digits_mlp_sensitive", "dataset=digits_shifted", "target=ios18", "compute_units=cpu_only",
        "diagnosis=off", "runtime.progress=false"]
# One sweep per palettization width (a job logs no nbits param): the label names its runs.
UNIFORM = {f"palettize{n}": ["precision=palettize", f"precision.weight_palettization.nbits={n}"] for n in (4, 6, 8)}
UNIFORM[""] = ["precision=int8,int4_per_block"]  # labelled by their precision param
MAX_DROP, RULE = 1.0, "confident"  # the pick defaults (conf/pick/default.yaml)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def cli(args: list[str], workdir: Path, allowed=(0,)) -> float:
    """Run ``precision-sweep <args>`` in ``workdir``; its wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECISION_SWEEP_") and k != "MLFLOW_TRACKING_URI"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "precision_sweep", *args], cwd=workdir, env=env, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in allowed:
        sys.exit(f"precision-sweep {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def job_runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("precision-sweep").experiment_id
    return [r for r in client.search_runs([experiment], max_results=1000) if r.data.tags.get("precision_sweep.role") == "job"]


def search(root: Path, cache: Path, name: str) -> dict:
    # exit 1: the held-out split missed the budget, which the figures then show
    seconds = cli(["precision=search", *DEMO, f"tracking.uri=sqlite:///{root / name / 'mlflow.db'}", f"paths.cache={cache}",
                   f"hydra.run.dir={root / name / 'out'}"], root / name, allowed=(0, 1))
    (run,) = job_runs(root / name / "mlflow.db")
    metrics = run.data.metrics
    return {"seconds": seconds, "evaluations": metrics["search_evaluations"],
            "exhaustive": metrics["search_exhaustive_evaluations"], "size": metrics["model_size_bytes"],
            "search_delta_pp": metrics["search_delta_pp"], "held_out_delta_pp": 100 * metrics["accuracy_delta"],
            "held_out_ci_low_pp": 100 * metrics["accuracy_delta_ci_low"],
            "budget_met": run.data.tags.get("search_budget_met")}


def smallest_uniform(root: Path, cache: Path):
    """The pick over the uniform recipes: (decision, seconds of their sweeps)."""
    import pandas as pd

    from precision_sweep.pick.select import pick
    from precision_sweep.tracking.summary import runs_table

    tables, seconds = [], 0.0
    for i, (label, grid) in enumerate(UNIFORM.items()):
        db = root / "uniform" / f"grid{i}" / "mlflow.db"
        seconds += cli(["-m", *grid, *DEMO, f"tracking.uri=sqlite:///{db}", f"paths.cache={cache}",
                        f"hydra.sweep.dir={root / 'uniform' / f'grid{i}'}"], root / "uniform")
        table = runs_table(job_runs(db))
        tables.append(table.assign(precision=label) if label else table)
    return pick(pd.concat(tables, ignore_index=True), MAX_DROP, "model_size_bytes", RULE), seconds


def main() -> None:
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        runs = {"cold": search(root, cache, "cold"), "warm": search(root, cache, "warm")}
        decision, uniform_seconds = smallest_uniform(root, cache)
    for label, r in runs.items():
        print(f"{label:>4}: {r['seconds']:6.1f} s wall, {r['evaluations']:.0f} evaluations of an exhaustive "
              f"{r['exhaustive']:,.0f} ({r['evaluations'] / r['exhaustive']:.2%}); chosen {r['size']:,.0f} bytes, "
              f"delta {r['search_delta_pp']:+.2f} pp on the search split, {r['held_out_delta_pp']:+.2f} pp "
              f"[CI low {r['held_out_ci_low_pp']:+.2f}] held out (budget met: {r['budget_met']})")
    print(f"uniform recipes (5 jobs in 4 sweeps, {uniform_seconds:.1f} s wall), pick {MAX_DROP:g} pp rule {RULE}:")
    for row in decision.pareto.sort_values("cost").itertuples():
        print(f"  {row.precision:<16} {row.cost:>10,.0f} bytes  delta {row.delta_pp:+.2f} pp  CI low {row.ci_low_pp:+.2f}"
              f"  {'within' if row.within_budget else 'over'} budget")
    if decision.pick is None:
        print(f"no uniform recipe meets the budget: {decision.reason}")
        return
    smallest = decision.pick["cost"]
    print(f"smallest uniform within budget: {decision.pick['precision']} at {smallest:,.0f} bytes")
    for label, r in runs.items():
        print(f"{label:>4}: search size / smallest passing uniform size = {r['size'] / smallest:.3f}")


if __name__ == "__main__":
    main()
