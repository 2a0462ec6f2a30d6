"""What each plot costs to draw and save: wall and CPU seconds, median of a few repeats.

Cases: ``confusion.png`` at 10 classes (450 samples, the digits test split) and at 1000 classes
(256 and 50000 samples, a few hundred predictions changed), ``confusion.csv`` at 1000 classes,
``pareto.png`` and ``overview.png`` of a 36-run sweep (6 precisions x 3 targets x 2 compute
units, some cells skipped or failed). Every case draws real matplotlib figures into a
temporary directory after one warm-up call (imports, font cache).

    python benchmarks/plot_cost.py                 # the current plots
    python benchmarks/plot_cost.py --against HEAD~1   # also the plots.py of a revision, same process

``--against`` loads that revision's ``metrics/plots.py`` beside the current one and times the
cases it has (it may lack the overview) once each, after the current ones. CPU seconds are this process's, so they hold on a
machine shared with other work, where wall seconds do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def predictions(n_classes: int, n: int, changed: float, seed: int = 0):
    """Labels, baseline top-1 (80% right) and a variant that changes ``changed`` of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    reference = np.where(rng.random(n) < 0.8, labels, rng.integers(0, n_classes, n))
    predicted = reference.copy()
    moved = rng.random(n) < changed
    predicted[moved] = rng.integers(0, n_classes, int(moved.sum()))
    return labels, reference, predicted


def sweep_table() -> pd.DataFrame:
    """36 runs: 6 precisions x ios16-18 x (all, cpu_only), as tracking.summary.runs_table has them."""
    sizes = {"fp32": 160e3, "fp16": 85e3, "int8": 49e3, "int8_per_block": 54e3, "palettize": 30e3, "int4_per_block": 38e3}
    deltas = {"fp32": 0.0, "fp16": 0.0, "int8": -0.002, "int8_per_block": -0.001, "palettize": -0.009, "int4_per_block": -0.031}
    rows = []
    for i, (precision, target, unit) in enumerate(itertools.product(sizes, ("ios16", "ios17", "ios18"), ("all", "cpu_only"))):
        status = "SKIPPED" if precision.endswith("per_block") and target != "ios18" else "FINISHED"
        if (precision, target, unit) == ("palettize", "ios16", "cpu_only"):
            status = "FAILED"
        delta = deltas[precision] * (1.5 if unit == "cpu_only" else 1.0)
        half = 0.002 + abs(delta) / 2
        ok = status == "FINISHED"
        rows.append({
            "run_id": f"run{i:02d}", "precision": precision, "target": target, "compute_units": unit, "status": status,
            "accuracy_delta": delta if ok else np.nan,
            "model_size_bytes": sizes[precision] - (800 if target == "ios18" else 0) if ok else np.nan,
            "metric:accuracy_delta_ci_low": delta - half if ok else np.nan,
            "metric:accuracy_delta_ci_high": delta + half if ok else np.nan,
        })
    return pd.DataFrame(rows)


def load_revision(rev: str):
    """``metrics/plots.py`` as it was at ``rev``, imported as its own module."""
    source = subprocess.run(["git", "show", f"{rev}:src/precision_sweep/metrics/plots.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "plots_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("plots_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(call, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """Median wall and CPU seconds of ``call()``, after one warm-up call unless told not to."""
    if warm_up:
        call()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def cases(plots, out: Path, current: bool) -> dict:
    """name -> zero-argument call drawing that plot with ``plots`` (current or old API)."""
    from precision_sweep.metrics.statistics import confusion, confusion_table
    from precision_sweep.pick.report import pareto_view
    from precision_sweep.pick.select import pick

    calls = {}
    for n_classes, n, changed in ((10, 450, 0.02), (1000, 256, 0.05), (1000, 50000, 0.005)):
        labels, reference, predicted = predictions(n_classes, n, changed)
        variant, baseline = confusion(predicted, labels, n_classes), confusion(reference, labels, n_classes)
        names = [f"n{i:08d}" for i in range(n_classes)]
        name = f"confusion.png  {n_classes:>4} classes, {n:>5} samples"
        if current:
            moved = predicted != reference
            involved = sum(np.bincount(a[moved], minlength=n_classes) for a in (labels, predicted, reference))
            right, base_right = predicted == labels, reference == labels
            flips = (int((base_right & ~right).sum()), int((~base_right & right).sum()))
            calls[name] = lambda v=variant, b=baseline, s=names, f=flips, c=involved: plots.confusion_png(
                out / "confusion.png", v, b, s, "model int8/ios18", flips=f, changed_by_class=c)
            if n_classes == 1000 and n == 50000:
                calls[f"confusion.csv  {n_classes:>4} classes, {n:>5} samples"] = (
                    lambda v=variant, b=baseline, s=names: confusion_table(v, b, s).to_csv(out / "confusion.csv", index=False))
        else:
            calls[name] = lambda v=variant, b=baseline, s=names: plots.confusion_png(out / "confusion.png", v, b, s, "t")
    table = sweep_table()
    decision = pick(table, 1.0, "model_size_bytes", "confident")
    view = pareto_view(decision)
    pick_id = (decision.pick or {}).get("run_id")
    if not current:
        view = view.assign(label=view["precision"] + "/" + view["target"])
    calls["pareto.png     36-run sweep"] = lambda: plots.pareto_png(out / "pareto.png", view, "model_size_bytes", 1.0,
                                                                     pick_id, decision.rule)
    if hasattr(plots, "overview_png"):
        calls["overview.png   36-run sweep"] = lambda: plots.overview_png(out / "overview.png", table, 1.0)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="also time metrics/plots.py as of this git revision")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from precision_sweep.metrics import plots

    versions = [("current", plots, True)]
    if args.against:
        versions.append((args.against, load_revision(args.against), False))
    results: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, module, current in versions:
            for name, call in cases(module, Path(tmp), current).items():
                # the old plots take seconds each: one call, warmed up by the current ones
                timing = timed(call, args.repeats) if current else timed(call, 1, warm_up=False)
                results.setdefault(name, {})[label] = timing
                print(f"  {label:>10}  {name}: wall {results[name][label][0]:.3f} s, cpu {results[name][label][1]:.3f} s",
                      file=sys.stderr, flush=True)
    labels = [label for label, _, _ in versions]
    print(f"\nplot cost, median of {args.repeats} (wall s / cpu s)")
    print(f"{'case':<44}" + "".join(f"{label:>22}" for label in labels))
    for name, by_label in results.items():
        cells = ["-" if label not in by_label else f"{by_label[label][0]:.3f} / {by_label[label][1]:.3f}" for label in labels]
        print(f"{name:<44}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
