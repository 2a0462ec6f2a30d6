"""PNG figures of a run and of a sweep, drawn with matplotlib's Agg backend (no display).

``confusion_png``: the variant's confusion matrix and where it differs from the baseline's;
``pareto_png``: cost against accuracy delta for a sweep, with the budget and the pick;
``drift_png``: per-op error along the depth of the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(
    path: Path, variant: np.ndarray, baseline: np.ndarray, class_names: list[str], title: str = ""
) -> Path:
    """Two panels: the variant's confusion counts and (variant - baseline) counts.

    ``variant`` and ``baseline`` are confusion matrices ``[true, predicted]``.
    """
    plt = _pyplot()
    n = len(class_names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    image = left.imshow(variant, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if variant[i, j]:
                left.text(j, i, str(variant[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if variant[i, j] > variant.max() / 2 else "black")
    left.set_title("variant: confusion matrix (counts)")
    fig.colorbar(image, ax=left, shrink=0.8, label="samples")
    diff = variant.astype(int) - baseline.astype(int)
    limit = max(1, int(np.abs(diff).max()))
    image = right.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit)
    for i, j in zip(*np.nonzero(diff)):
        right.text(j, i, f"{diff[i, j]:+d}", ha="center", va="center", fontsize=8)
    changed = int(np.abs(diff).sum() // 2)
    right.set_title(f"variant - FP32 baseline ({changed} moved)" if changed else "variant - FP32 baseline (identical)")
    fig.colorbar(image, ax=right, shrink=0.8, label="change in samples")
    for axis in (left, right):
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        axis.set_xticks(range(n), class_names)
        axis.set_yticks(range(n), class_names)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def pareto_png(path: Path, frame, cost: str, max_drop: float, pick_run_id: str | None, rule: str) -> Path:
    """Cost (x, log scale when it spans a decade) against accuracy delta in pp (y).

    ``frame`` has columns ``run_id``, ``label``, ``cost``, ``delta_pp``, ``on_front`` and
    optionally ``ci_low_pp``/``ci_high_pp`` (drawn as error bars).
    """
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 5.2), constrained_layout=True)
    has_ci = "ci_low_pp" in frame and frame["ci_low_pp"].notna().any()
    for on_front, style in ((False, dict(color="0.55", marker="o")), (True, dict(color="tab:blue", marker="o"))):
        part = frame[frame["on_front"] == on_front]
        if part.empty:
            continue
        if has_ci:
            low = (part["delta_pp"] - part["ci_low_pp"]).clip(lower=0).fillna(0)
            high = (part["ci_high_pp"] - part["delta_pp"]).clip(lower=0).fillna(0)
            axis.errorbar(part["cost"], part["delta_pp"], yerr=[low, high], linestyle="none",
                          capsize=3, alpha=0.8, **style,
                          label="Pareto front (95% CI)" if on_front else "dominated (95% CI)")
        else:
            axis.scatter(part["cost"], part["delta_pp"], label="Pareto front" if on_front else "dominated", **style)
    front = frame[frame["on_front"]].sort_values("cost")
    axis.step(front["cost"], front["delta_pp"], where="post", color="tab:blue", alpha=0.4)
    for _, row in frame.iterrows():
        axis.annotate(row["label"], (row["cost"], row["delta_pp"]), textcoords="offset points",
                      xytext=(9, 7), fontsize=8)
    axis.axhline(-max_drop, color="tab:red", linestyle="--", label=f"budget: -{max_drop:g} pp")
    if pick_run_id is not None and (frame["run_id"] == pick_run_id).any():
        chosen = frame[frame["run_id"] == pick_run_id].iloc[0]
        axis.scatter([chosen["cost"]], [chosen["delta_pp"]], s=260, facecolors="none",
                     edgecolors="tab:green", linewidths=2.5, zorder=5, label=f"pick (rule {rule})")
    costs = frame["cost"].astype(float)
    if len(costs) and costs.min() > 0 and costs.max() / costs.min() > 10:
        axis.set_xscale("log")
    axis.set_xlabel(f"cost: {cost}")
    axis.set_ylabel("accuracy delta vs FP32 baseline (pp)")
    axis.set_title(f"cost vs accuracy: budget {max_drop:g} pp, rule {rule}")
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def drift_png(path: Path, table, threshold: float, title: str = "") -> Path:
    """Relative error (log scale) and SQNR of every compared op, in program order.

    ``table`` is a drift table (:func:`precision_sweep.diagnose.drift.drift_table`).
    """
    plt = _pyplot()
    n = len(table)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.42 * n + 3), 7.5), sharex=True,
                                      constrained_layout=True)
    x = np.arange(n)
    rel = table["rel_error"].to_numpy(dtype=float)
    finite = np.isfinite(rel)
    floor = 1e-9
    top.semilogy(x[finite], np.maximum(rel[finite], floor), marker="o", color="tab:blue", label="relative error")
    if (~finite).any():
        ceiling = max(1.0, np.nanmax(np.where(finite, rel, np.nan), initial=1.0)) * 10
        top.scatter(x[~finite], np.full((~finite).sum(), ceiling), marker="X", s=90, color="tab:red",
                    label="NaN/Inf in output", zorder=5)
    top.axhline(threshold, color="tab:orange", linestyle="--", label=f"threshold {threshold:g}")
    marks: dict[int, list[str]] = {}
    for column, text in (("is_first_jump", "first jump"), ("is_first_nonfinite", "first NaN/Inf")):
        for index in (np.flatnonzero(table[column].to_numpy(dtype=bool)) if column in table else []):
            marks.setdefault(int(index), []).append(text)
    for index, texts in marks.items():
        color = "tab:red" if "first NaN/Inf" in texts else "tab:orange"
        for axis in (top, bottom):
            axis.axvline(index, color=color, alpha=0.3, linewidth=6)
        top.annotate(" + ".join(texts), (index, threshold), textcoords="offset points", xytext=(6, 8),
                     color=color, fontsize=9, fontweight="bold")
    top.set_ylabel("relative L2 error vs FP32 program")
    top.grid(True, which="both", alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    sqnr = table["sqnr_db"].to_numpy(dtype=float)
    shown = np.clip(np.nan_to_num(sqnr, nan=0.0, posinf=150.0, neginf=0.0), -20, 150)
    bottom.bar(x, shown, color=np.where(np.isfinite(sqnr) & (sqnr < 150), "tab:green", "0.7"))
    broken = ~np.isfinite(sqnr) & (sqnr < 0)
    if broken.any():
        bottom.scatter(x[broken], np.zeros(broken.sum()), marker="X", s=70, color="tab:red", zorder=5,
                       clip_on=False, label="NaN/Inf (no SQNR)")
        bottom.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("SQNR (dB, higher is better;\ngrey = identical to FP32)")
    bottom.grid(True, axis="y", alpha=0.3)
    labels = [f"{layer or '-'}: {op_type}" for layer, op_type in zip(table["layer"], table["op_type"])]
    bottom.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    bottom.set_xlabel("op in program order (Keras layer: MIL op type)")
    if title:
        import textwrap

        top.set_title("\n".join(textwrap.fill(line, 110) for line in title.splitlines()), fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
