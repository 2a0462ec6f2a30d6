"""PNG figures of a run and of a sweep, drawn with matplotlib's Agg backend (no display).

``confusion_png``: the variant's confusion matrix and where it differs from the baseline's
(beyond ``MAX_CLASSES`` classes, only the classes whose predictions changed);
``pareto_png``: model size (or another cost) against accuracy delta for a sweep, with the
budget and the pick; ``overview_png``: heat maps of delta and size over precision x target
per compute unit; ``drift_png``: per-op error along the depth of the network.

Each ``*_png`` has a ``*_figure`` twin returning the open figure and what it shows, so tests
read the figure's structure instead of its pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# Beyond MAX_CLASSES classes a confusion matrix's tick labels no longer read: show at most
# SUBSET_CLASSES of them (the ones whose predictions changed most), which also keeps the
# figure's cost (text layout: ~3 ms per label) under a second.
MAX_CLASSES = 30
SUBSET_CLASSES = 20
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- shared helpers


def _target_key(target: str) -> tuple[str, int]:
    """``ios16`` -> ``("ios", 16)``: targets sort by platform, then version."""
    match = re.fullmatch(r"(\D*)(\d+)", str(target))
    return (match.group(1), int(match.group(2))) if match else (str(target), -1)


def compact_targets(targets) -> str:
    """Consecutive versions of one platform as a range: ``ios16, ios17, ios18`` -> ``ios16–18``."""
    runs: list[list[tuple[str, int, str]]] = []
    for target in sorted(set(map(str, targets)), key=_target_key):
        prefix, number = _target_key(target)
        last = runs[-1][-1] if runs else None
        if last and number >= 0 and last[0] == prefix and last[1] == number - 1:
            runs[-1].append((prefix, number, target))
        else:
            runs.append([(prefix, number, target)])
    return ", ".join(run[0][2] if len(run) == 1 else f"{run[0][2]}–{run[-1][1]}" for run in runs)


def size_unit(max_bytes: float) -> tuple[str, float]:
    """KB below one MB, else MB (1024-based, as ``pick_size_kb``)."""
    return ("MB", 1024.0 ** 2) if max_bytes >= 1024 ** 2 else ("KB", 1024.0)


def _format_size(value: float, unit: str, scale: float) -> str:
    return f"{value / scale:.2f} {unit}" if unit == "MB" else f"{value / scale:.1f} {unit}"


def _overlap(a, b) -> float:
    """Area shared by two boxes ``(x0, y0, x1, y1)``."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


# ----------------------------------------------------------------------------------- confusion


def _shown_classes(variant: np.ndarray, involved: np.ndarray, max_classes: int) -> tuple[np.ndarray, str]:
    """All classes up to ``max_classes``; beyond, up to ``SUBSET_CLASSES`` of those whose
    predictions changed (most first), or when none changed the most confused ones."""
    n = len(variant)
    if n <= max_classes:
        return np.arange(n), "all"
    keep = min(SUBSET_CLASSES, max_classes)
    if (involved > 0).any():
        order = np.argsort(-involved, kind="stable")[: min(keep, int((involved > 0).sum()))]
        return np.sort(order), "changed"
    off = variant - np.diag(np.diag(variant))
    score = off.sum(0) + off.sum(1)
    if (score > 0).any():
        order = np.argsort(-score, kind="stable")[: min(keep, int((score > 0).sum()))]
        return np.sort(order), "confused"
    return np.arange(keep), "first"


def _cell_texts(axis, matrix: np.ndarray, fmt, fontsize: float, image) -> None:
    """The value of every non-zero cell, white on dark cells."""
    cmap, norm = image.get_cmap(), image.norm
    for i, j in zip(*np.nonzero(matrix)):
        r, g, b, _ = cmap(norm(matrix[i, j]))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        axis.text(j, i, fmt(matrix[i, j]), ha="center", va="center", fontsize=fontsize,
                  color="white" if dark else "black", in_layout=False)


def _matrix_axes(plt, panels: int, n_columns: int, n_rows: int, label_chars: int, lines: list[str]):
    """Side-by-side matrix panels with their colour bars under the title ``lines`` (wrapped to
    the width), laid out in inches from the number of cells and the label lengths
    (constrained layout would cost more than the figure)."""
    import textwrap

    cell = 0.36 if n_columns <= 12 else 0.26 if n_columns <= 20 else 0.19
    char = 0.075 if n_columns <= 15 else 0.056  # inches per character of the tick labels
    rotated = n_columns > 10 or label_chars > 3
    panel_w, panel_h = max(2.6, cell * n_columns), max(2.2, cell * n_rows)
    names = 0.4 + char * label_chars
    bar_gap, bar_w, bar_labels = 0.1, 0.13, 0.75
    column = panel_w + bar_gap + bar_w + bar_labels  # the second panel has no row labels
    width = names + panels * column + 0.1
    per_line = max(40, int(width / 0.078))  # characters of 9 pt text per line
    lines = [part for line in lines for part in textwrap.wrap(line, per_line)]
    top = 0.25 + 0.17 * len(lines) + 0.3
    bottom = 0.45 + (char * label_chars if rotated else 0.15)
    height = top + panel_h + bottom
    fig = plt.figure(figsize=(width, height))
    fig.suptitle("\n".join(lines), fontsize=9, y=1 - 0.08 / height, va="top")
    axes, bars = [], []
    for c in range(panels):
        x = names + c * column
        axes.append(fig.add_axes((x / width, bottom / height, panel_w / width, panel_h / height)))
        bars.append(fig.add_axes(((x + panel_w + bar_gap) / width, bottom / height, bar_w / width, panel_h / height)))
    return fig, axes, bars


def confusion_figure(
    variant: np.ndarray,
    baseline: np.ndarray,
    class_names: list[str],
    title: str = "",
    flips: tuple[int, int] | None = None,
    changed_by_class: np.ndarray | None = None,
    max_classes: int = MAX_CLASSES,
):
    """The figure of :func:`confusion_png` and what it shows.

    Returns
    -------
    (Figure, dict)
        The open figure and ``{"shown": class names shown, "selection": "all" | "changed" |
        "confused" | "first", "n_classes", "panels", "accuracy", "baseline_accuracy",
        "delta_pp", "flipped"}``.
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    variant, baseline = np.asarray(variant, dtype=np.int64), np.asarray(baseline, dtype=np.int64)
    n = len(variant)
    names = [str(c) for c in class_names] if len(class_names) == n else [str(c) for c in range(n)]
    accuracy = np.trace(variant) / max(1, variant.sum())
    baseline_accuracy = np.trace(baseline) / max(1, baseline.sum())
    delta_pp = 100 * (accuracy - baseline_accuracy)
    diff = variant - baseline
    moved = np.abs(diff)
    involved = moved.sum(0) + moved.sum(1) if changed_by_class is None else np.asarray(changed_by_class)
    shown, selection = _shown_classes(variant, involved, max_classes)
    subset = len(shown) < n

    def restrict(matrix):
        part = matrix[np.ix_(shown, shown)]
        if subset:  # predictions of a shown class that went to a class not shown
            part = np.column_stack([part, matrix[shown].sum(1) - part.sum(1)])
        return part

    counts, change = restrict(variant), restrict(diff)
    has_diff = bool(moved.any())
    labels = [name if len(name) <= 18 else name[:17] + "…" for name in (names[i] for i in shown)]
    columns = labels + (["other"] if subset else [])
    if flips is not None:
        to_wrong, to_right = map(int, flips)
        flipped = to_wrong + to_right
        flip_text = (f"{flipped} flipped prediction{'s' * (flipped != 1)} ({to_wrong} to wrong, {to_right} to right)"
                     if flipped else "no flipped prediction")
    else:
        flipped = int(moved.sum() // 2)
        flip_text = f"{flipped} prediction{'s' * (flipped != 1)} moved"
    lines = [title] if title else []
    lines.append(f"accuracy {100 * accuracy:.2f}% (FP32 {100 * baseline_accuracy:.2f}%), "
                 f"delta {delta_pp:+.2f} pp · {flip_text}")
    if not has_diff:
        lines[-1] += " · same confusion matrix as FP32"
    if subset:
        changed = int((involved > 0).sum())
        what = {"changed": f"the {len(shown)} of the {changed} whose predictions changed that changed most"
                if changed > len(shown) else "those whose predictions changed",
                "confused": "the most confused (no prediction changed)",
                "first": "the first (no errors, no changes)"}[selection]
        lines.append(f"{len(shown)} of {n} classes shown: {what}; full matrices in confusion.csv")
    k = len(columns)
    fig, axes, bars = _matrix_axes(plt, 2 if has_diff else 1, k, len(labels), max(map(len, columns)), lines)
    fontsize = 8 if k <= 12 else 6.5 if k <= 20 else 5.5
    left = axes[0]
    image = left.imshow(counts, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=max(1, int(counts.max()))), aspect="auto")
    _cell_texts(left, counts, str, fontsize, image)
    left.set_title("variant: confusion counts", fontsize=9)
    fig.colorbar(image, cax=bars[0], label="samples")
    if has_diff:
        right = axes[1]
        limit = max(1, int(np.abs(change).max()))
        image = right.imshow(change, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        _cell_texts(right, change, lambda v: f"{v:+d}", fontsize, image)
        right.set_title("variant − FP32 baseline (samples)", fontsize=9)
        fig.colorbar(image, cax=bars[1], label="change in samples", ticks=MaxNLocator(integer=True))
    tick = 8 if k <= 15 else 6
    for index, axis in enumerate(axes):
        axis.set_xlabel("predicted class")
        axis.set_xticks(range(k), columns, fontsize=tick, rotation=90 if k > 10 or max(map(len, columns)) > 3 else 0)
        # the difference panel shares the rows of the counts beside it
        axis.set_yticks(range(len(labels)), labels if index == 0 else [], fontsize=tick)
    axes[0].set_ylabel("true class")
    info = {"shown": [names[i] for i in shown], "selection": selection, "n_classes": n,
            "panels": 2 if has_diff else 1, "accuracy": float(accuracy),
            "baseline_accuracy": float(baseline_accuracy), "delta_pp": float(delta_pp), "flipped": flipped}
    return fig, info


def confusion_png(
    path: Path, variant: np.ndarray, baseline: np.ndarray, class_names: list[str], title: str = "",
    flips: tuple[int, int] | None = None, changed_by_class: np.ndarray | None = None,
    max_classes: int = MAX_CLASSES,
) -> Path:
    """The variant's confusion counts and, when any prediction moved, (variant - baseline).

    ``variant`` and ``baseline`` are confusion matrices ``[true, predicted]``. The title
    gives accuracy, delta and flips (``flips``: ``(to_wrong, to_right)``; without it, the
    net moves the matrices show). Beyond ``max_classes`` classes only those with
    ``changed_by_class > 0`` are shown (default: classes whose row or column differs), or
    when none, the most confused; an ``other`` column keeps each row's total.
    """
    fig, _ = confusion_figure(variant, baseline, class_names, title, flips, changed_by_class, max_classes)
    return _save(fig, path)


# -------------------------------------------------------------------------------------- pareto


def _group_label(rows, all_units: list[str]) -> str:
    """One line per precision (and per compute-unit set when they differ) with its targets."""
    lines = []
    for precision, part in rows.groupby("precision", sort=False):
        by_targets: dict[str, list[str]] = {}
        if len(all_units) > 1:
            for unit, unit_part in part.groupby("compute_units", sort=False):
                by_targets.setdefault(compact_targets(unit_part["target"]), []).append(str(unit))
        else:
            by_targets[compact_targets(part["target"])] = []
        for targets, units in by_targets.items():
            suffix = " · " + ", ".join(units) if units and set(units) != set(all_units) else ""
            lines.append(f"{precision} · {targets}{suffix}")
    return "\n".join(lines if len(lines) <= 3 else lines[:2] + [f"+{len(lines) - 2} more"])


# Label positions tried around a point, nearest first: (dx, dy) directions x distances in points.
_DIRECTIONS = ((1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1, 0), (-1, 0))
_DISTANCES = (7, 14, 24, 36, 52, 72, 100)


def _segment_hits_box(p, q, box) -> bool:
    """Whether segment ``p``-``q`` passes through ``box`` (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = p, q
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for edge_p, edge_q in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if edge_p == 0:
            if edge_q < 0:
                return False
        else:
            t = edge_q / edge_p
            if edge_p < 0:
                low = max(low, t)
            else:
                high = min(high, t)
            if low > high:
                return False
    return True


def _segments_cross(a, b, c, d) -> bool:
    def side(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def _place_labels(fig, axis, items, obstacles, bars, lines) -> list[tuple]:
    """Annotate each ``(x, y, text, style)`` where its box stays inside the axes and overlaps
    no placed label, marker (``obstacles``, pixel boxes) nor leader line; error ``bars`` and
    horizontal ``lines`` (the budget) are avoided when possible. Returns the placed boxes.

    Each text is measured once; candidate boxes are that box shifted, so trying every
    position costs no text layout.
    """
    renderer = fig.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    inside = (frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2)
    to_px = fig.dpi / 72
    hard = list(obstacles)
    placed, leaders = [], []
    anchors = axis.transData.transform([(x, y) for x, y, _, _ in items]) if items else np.zeros((0, 2))
    for index, (x, y, text, style) in enumerate(items):
        px, py = anchors[index]
        others = np.delete(anchors, index, axis=0)
        markers = [o for o in obstacles if not (o[0] <= px <= o[2] and o[1] <= py <= o[3])]
        probe = axis.text(0, 0, text, fontsize=8, transform=None, **style)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width, extent.height
        best = None
        for distance in _DISTANCES:
            for dx, dy in _DIRECTIONS:
                ox, oy = dx * distance * to_px, dy * distance * to_px
                left = px + ox - (0 if dx > 0 else w if dx < 0 else w / 2)
                bottom = py + oy - (0 if dy > 0 else h if dy < 0 else h / 2)
                box = (left - 2, bottom - 2, left + w + 2, bottom + h + 2)
                if box[0] < inside[0] or box[1] < inside[1] or box[2] > inside[2] or box[3] > inside[3]:
                    continue
                score = 10 * sum(_overlap(box, o) for o in hard) + sum(_overlap(box, o) for o in [*bars, *lines])
                end = (min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3]))
                if distance > 7:  # a leader line: it must not cut through labels, markers or leaders
                    score += 400 * sum(_segment_hits_box((px, py), end, o) for o in [*placed, *markers])
                    score += 100 * sum(_segments_cross((px, py), end, a, b) for a, b in leaders)
                    score += 30 * sum(_segment_hits_box((px, py), end, o) for o in bars)
                else:  # no leader: the label must sit nearer its own point than any other
                    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                    if len(others) and np.hypot(*(others - centre).T).min() < np.hypot(px - centre[0], py - centre[1]):
                        score += 300
                score += distance / 1000  # nearer wins among equals
                if best is None or score < best[0]:
                    best = (score, distance, (dx, dy), box, end)
            if best is not None and best[0] < 1:
                break
        if best is None:  # larger than the axes: centre it on the point
            best = (0, 0, (0, 0), (px - w / 2, py - h / 2, px + w / 2, py + h / 2), (px, py))
        _, distance, (dx, dy), box, end = best
        arrow = dict(arrowstyle="-", color="0.35", lw=0.7, shrinkA=0, shrinkB=4) if distance > 7 else None
        label = axis.annotate(text, (x, y), xytext=(dx * distance, dy * distance), textcoords="offset points",
                              fontsize=8, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                              annotation_clip=False, arrowprops=arrow, **style)
        label.set_in_layout(False)
        hard.append(box)
        placed.append(box)
        if arrow:
            leaders.append(((px, py), end))
    return placed


def _point_clusters(frame, tolerance: float, log: bool) -> list:
    """Runs drawn as one point, as lists of row indices: the same delta and either the same
    cost or the same precision within ``tolerance`` of the x axis (markers that would touch)."""
    parent = list(range(len(frame)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x = np.log10(frame["x"].to_numpy(float)) if log else frame["x"].to_numpy(float)
    delta = frame["delta_pp"].round(6).to_numpy()
    cost = frame["cost"].to_numpy(float)
    precision = frame["precision"].astype(str).to_numpy()
    for i in range(len(frame)):
        for j in range(i):
            same = delta[i] == delta[j] and (cost[i] == cost[j] or
                                             (precision[i] == precision[j] and abs(x[i] - x[j]) <= tolerance))
            if same:
                parent[root(i)] = root(j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(frame)):
        clusters.setdefault(root(i), []).append(i)
    return list(clusters.values())


def pareto_figure(frame, cost: str, max_drop: float, pick_run_id: str | None, rule: str):
    """The figure of :func:`pareto_png` and what it shows.

    Returns
    -------
    (Figure, dict)
        The open figure and ``{"labels": one text per labelled group, "pick": the pick's
        text or None, "boxes": the labels' pixel boxes, "x_unit": unit of the x axis}``.
    """
    import pandas as pd

    plt = _pyplot()
    frame = frame.reset_index(drop=True)
    costs = frame["cost"].astype(float)
    in_bytes = cost.endswith("_bytes")
    unit, scale = size_unit(costs.max()) if in_bytes else ("", 1.0)
    frame = frame.assign(x=costs / scale, delta_pp=frame["delta_pp"].astype(float))
    if "compute_units" not in frame:
        frame["compute_units"] = ""
    all_units = list(dict.fromkeys(frame["compute_units"].astype(str)))
    # A fixed layout: constrained layout would cost more than the rest of the figure.
    fig = plt.figure(figsize=(9, 6))
    axis = fig.add_axes((0.085, 0.14, 0.895, 0.76))
    has_ci = "ci_low_pp" in frame and frame["ci_low_pp"].notna().any()
    for on_front, style in ((False, dict(color="0.55", marker="o")), (True, dict(color="tab:blue", marker="o"))):
        part = frame[frame["on_front"] == on_front]
        if part.empty:
            continue
        if has_ci:
            low = (part["delta_pp"] - part["ci_low_pp"]).clip(lower=0).fillna(0)
            high = (part["ci_high_pp"] - part["delta_pp"]).clip(lower=0).fillna(0)
            axis.errorbar(part["x"], part["delta_pp"], yerr=[low, high], linestyle="none", markersize=5,
                          capsize=3, alpha=0.8, **style,
                          label="Pareto front (95% CI)" if on_front else "dominated (95% CI)")
        else:
            axis.scatter(part["x"], part["delta_pp"], s=30, label="Pareto front" if on_front else "dominated", **style)
    front = frame[frame["on_front"]].sort_values("x")
    axis.step(front["x"], front["delta_pp"], where="post", color="tab:blue", alpha=0.4)
    axis.axhline(-max_drop, color="tab:red", linestyle="--", label=f"budget: -{max_drop:g} pp")
    chosen = None
    if pick_run_id is not None and (frame["run_id"] == pick_run_id).any():
        chosen = frame[frame["run_id"] == pick_run_id].iloc[0]
        axis.scatter([chosen["x"]], [chosen["delta_pp"]], s=260, facecolors="none", edgecolors="tab:green",
                     linewidths=2.5, zorder=5, label=f"pick (rule {rule})")

    # y from the data, the budget and zero, with room above for labels
    values = [frame["delta_pp"], pd.Series([-max_drop, 0.0])]
    if has_ci:
        values += [frame["ci_low_pp"].dropna(), frame["ci_high_pp"].dropna()]
    low, high = float(pd.concat(values).min()), float(pd.concat(values).max())
    span = max(high - low, 0.5)
    axis.set_ylim(low - 0.15 * span, high + 0.3 * span)
    lo, hi = float(frame["x"].min()), float(frame["x"].max())
    log = lo > 0 and hi / lo > 10
    if log:
        axis.set_xscale("log")
        factor = (hi / lo) ** 0.12
        axis.set_xlim(lo / factor, hi * factor)
        tolerance = 0.012 * np.log10(hi / lo * factor ** 2)
    else:
        pad = 0.12 * (hi - lo if hi > lo else max(hi, 1.0))
        axis.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        tolerance = 0.012 * (axis.get_xlim()[1] - axis.get_xlim()[0])
    axis.set_xlabel(f"model size ({unit})" if cost == "model_size_bytes" else
                    f"{cost.removesuffix('_bytes')} ({unit})" if in_bytes else f"cost: {cost}")
    axis.set_ylabel("accuracy delta vs FP32 baseline (pp)")
    axis.grid(True, alpha=0.3)
    handles, names = axis.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncols=len(names), fontsize=8, frameon=False)

    what = "model size" if in_bytes else cost
    pick_text = None
    if chosen is not None:
        where = f"{chosen['precision']} at {chosen['target']}" + (f" · {chosen['compute_units']}" if len(all_units) > 1 else "")
        size = _format_size(chosen["cost"], unit, scale) if in_bytes else f"{cost} {chosen['cost']:,.4g}"
        pick_text = f"pick: {where}\n{size}, {chosen['delta_pp']:+.2f} pp"
        verdict = pick_text.replace("\n", ", ")
    else:
        verdict = "no run within budget"
    axis.set_title(f"Accuracy delta vs FP32 against {what} ({len(frame)} runs)\n"
                   f"budget -{max_drop:g} pp, rule {rule} · {verdict}", fontsize=10)

    items = []
    for rows in (frame.iloc[c] for c in _point_clusters(frame, tolerance, log)):
        x, delta = float(rows["x"].mean()), float(rows["delta_pp"].iloc[0])
        if chosen is not None and (rows["run_id"] == chosen["run_id"]).any():
            others = rows[rows["run_id"] != chosen["run_id"]]
            x, delta = float(chosen["x"]), float(chosen["delta_pp"])
            text = pick_text + (f"\nalso: {_group_label(others, all_units)}" if not others.empty else "")
            items.append((0, x, delta, text, dict(color="darkgreen", fontweight="bold")))
        else:
            items.append((1 if rows["on_front"].any() else 2, x, delta, _group_label(rows, all_units), dict(color="0.15")))
    items.sort(key=lambda item: (item[0], item[1]))
    transform = axis.transData
    obstacles, bars = [], []
    for px, py in transform.transform(frame[["x", "delta_pp"]].to_numpy(float)):
        obstacles.append((px - 6, py - 6, px + 6, py + 6))
    if chosen is not None:
        px, py = transform.transform((chosen["x"], chosen["delta_pp"]))
        obstacles.append((px - 13, py - 13, px + 13, py + 13))
    if has_ci:
        for row in frame.dropna(subset=["ci_low_pp", "ci_high_pp"]).itertuples():
            (px, y0), (_, y1) = transform.transform([(row.x, row.ci_low_pp), (row.x, row.ci_high_pp)])
            bars.append((px - 5, y0 - 2, px + 5, y1 + 2))
    _, budget_y = transform.transform((lo, -max_drop))
    budget = [(-1e9, budget_y - 2, 1e9, budget_y + 2)]
    boxes = _place_labels(fig, axis, [(x, y, text, style) for _, x, y, text, style in items], obstacles, bars, budget)
    return fig, {"labels": [item[3] for item in items], "pick": pick_text, "boxes": boxes, "x_unit": unit}


def pareto_png(path: Path, frame, cost: str, max_drop: float, pick_run_id: str | None, rule: str) -> Path:
    """Cost (x: KB or MB for a ``*_bytes`` cost; log scale when it spans a decade) against
    accuracy delta in pp (y, from the data, the budget line always in view).

    ``frame`` has columns ``run_id``, ``precision``, ``target``, ``cost``, ``delta_pp``,
    ``on_front``, optionally ``compute_units`` and ``ci_low_pp``/``ci_high_pp`` (drawn as
    error bars). Runs at the same point share one label (``int8 · ios16–18``); the pick is
    named with its size and delta; labels are placed inside the axes without overlapping.
    """
    fig, _ = pareto_figure(frame, cost, max_drop, pick_run_id, rule)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ overview

_STATUS_RANK = {"FINISHED": 3, "SKIPPED": 2, "FAILED": 1, "KILLED": 1}
_STATUS_LOOK = {  # how a cell without a delta is drawn: fill, hatch, text
    "SKIPPED": ("0.9", "//", "skipped"),
    "FAILED": ("#f6c9c4", "xx", "failed"),
    "KILLED": ("#f6c9c4", "xx", "killed"),
    "RUNNING": ("0.97", "..", "running"),
    "FINISHED": ("0.97", "", "no value"),
    None: ("white", "", "not run"),
}


def _grid_axes(plt, n_rows: int, n_precisions: int, n_targets: int, name_chars: int, target_chars: int):
    """A row of two heat-map panels per compute unit and one colour bar per column, laid out
    in inches from the label lengths (constrained layout costs more than drawing the cells)."""
    char = 0.075  # inches per character of an 8 pt tick label
    names = 0.45 + char * name_chars  # y label + precision names
    cell_w = max(0.65, char * max(target_chars, 6) + 0.15)
    panel_w, panel_h = cell_w * n_targets, max(1.6, 0.3 * n_precisions)
    bar_gap, bar_w, bar_labels = 0.12, 0.14, 0.85
    column = names + panel_w + bar_gap + bar_w + bar_labels
    top, row_head, row_foot, bottom = 0.45, 0.3 if n_rows == 1 else 0.48, 0.12, 0.53
    width = 2 * column + 0.1
    height = top + n_rows * (row_head + panel_h + row_foot) + bottom
    fig = plt.figure(figsize=(width, height))
    axes = np.empty((n_rows, 2), dtype=object)
    for r in range(n_rows):
        y = height - top - r * (row_head + panel_h + row_foot) - row_head - panel_h
        for c in range(2):
            x = c * column + names
            axes[r, c] = fig.add_axes((x / width, y / height, panel_w / width, panel_h / height))
    bars = []
    low = height - top - n_rows * (row_head + panel_h + row_foot) + row_foot
    for c in range(2):
        x = c * column + names + panel_w + bar_gap
        bars.append(fig.add_axes((x / width, low / height, bar_w / width, (height - top - row_head - low) / height)))
    return fig, axes, bars


def overview_figure(table, max_drop: float | None = None):
    """The figure of :func:`overview_png` and what it shows.

    Returns
    -------
    (Figure, dict)
        The open figure and ``{"cells": {(compute_units, precision, target): status},
        "precisions", "targets", "compute_units", "size_unit"}``; a cell's status is
        ``FINISHED``, ``SKIPPED``, ``FAILED``, ``KILLED``, ``RUNNING`` or None (not in the table).
    """
    import pandas as pd
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    table = table.reset_index(drop=True)
    units_column = table["compute_units"] if "compute_units" in table else pd.Series("", index=table.index)
    table = table.assign(compute_units=units_column.fillna("").astype(str),
                         precision=table["precision"].astype(str), target=table["target"].astype(str))
    precisions = list(dict.fromkeys(table["precision"]))
    targets = sorted(dict.fromkeys(table["target"]), key=_target_key)
    units = list(dict.fromkeys(table["compute_units"]))
    best: dict[tuple, tuple] = {}
    for row in table.itertuples():
        delta = pd.to_numeric(getattr(row, "accuracy_delta", np.nan), errors="coerce")
        size = pd.to_numeric(getattr(row, "model_size_bytes", np.nan), errors="coerce")
        status = str(row.status)
        rank = _STATUS_RANK.get(status, 0) + (status == "FINISHED" and pd.notna(delta))
        key = (row.compute_units, row.precision, row.target)
        if key not in best or rank >= best[key][0]:  # the later run of a repeated cell wins ties
            best[key] = (rank, status, 100 * delta if pd.notna(delta) else np.nan, size)
    shape = (len(units), len(precisions), len(targets))
    delta, size = np.full(shape, np.nan), np.full(shape, np.nan)
    cells = {}
    for u, unit in enumerate(units):
        for p, precision in enumerate(precisions):
            for t, target in enumerate(targets):
                entry = best.get((unit, precision, target))
                cells[(unit, precision, target)] = entry[1] if entry else None
                if entry and entry[1] == "FINISHED":
                    delta[u, p, t], size[u, p, t] = entry[2], entry[3]

    budget = 1.0 if max_drop is None else float(max_drop)
    low = min(float(np.nanmin(delta)) if np.isfinite(delta).any() else 0.0, -2 * budget, -0.1)
    high = max(float(np.nanmax(delta)) if np.isfinite(delta).any() else 0.0, 0.0)
    delta_norm = TwoSlopeNorm(vcenter=-budget, vmin=low, vmax=max(high, -budget + 0.05 * (budget or 1)))
    max_size = float(np.nanmax(size)) if np.isfinite(size).any() else 1.0
    unit_name, scale = size_unit(max_size)
    size_shown = size / scale
    size_norm = Normalize(vmin=0, vmax=max(max_size / scale, 1e-9))

    fig, axes, bars = _grid_axes(plt, len(units), len(precisions), len(targets), max(map(len, precisions)),
                                 max(map(len, targets)))
    fontsize = 8 if len(targets) <= 6 else 6.5
    images = []
    for u, unit in enumerate(units):
        for column, (values, norm, cmap, fmt, what) in enumerate((
            (delta[u], delta_norm, "RdYlGn", lambda v: f"{v:+.2f}", "accuracy delta vs FP32 (pp)"),
            (size_shown[u], size_norm, "Blues", lambda v: f"{v:.1f}" if unit_name == "KB" else f"{v:.2f}",
             f"model size ({unit_name})"),
        )):
            axis = axes[u, column]
            colormap = plt.get_cmap(cmap).copy()
            colormap.set_bad("white")
            image = axis.imshow(np.ma.masked_invalid(values), cmap=colormap, norm=norm, aspect="auto")
            if u == 0:
                images.append(image)
            for p, precision in enumerate(precisions):
                for t, target in enumerate(targets):
                    status = cells[(unit, precision, target)]
                    value = values[p, t]
                    if np.isfinite(value):
                        r, g, b, _ = colormap(norm(value))
                        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                        axis.text(t, p, fmt(value), ha="center", va="center", fontsize=fontsize,
                                  color="white" if dark else "black", in_layout=False)
                        continue
                    fill, hatch, text = _STATUS_LOOK.get(status, _STATUS_LOOK[None])
                    axis.add_patch(Rectangle((t - 0.5, p - 0.5), 1, 1, facecolor=fill, hatch=hatch,
                                             edgecolor="0.7", linewidth=0))
                    axis.text(t, p, text, ha="center", va="center", fontsize=fontsize - 1, color="0.2",
                              in_layout=False)
            # targets under the last row only: the rows above share its columns
            axis.set_xticks(range(len(targets)), targets if u == len(units) - 1 else [], fontsize=8)
            axis.set_yticks(range(len(precisions)), precisions, fontsize=8)
            # cell borders as two line collections (minor ticks cost ~5 ms each)
            axis.hlines(np.arange(1, len(precisions)) - 0.5, -0.5, len(targets) - 0.5, color="white", linewidth=1.5)
            axis.vlines(np.arange(1, len(targets)) - 0.5, -0.5, len(precisions) - 0.5, color="white", linewidth=1.5)
            axis.set_title(what + (f"\ncompute units: {unit}" if len(units) > 1 else ""), fontsize=9)
            if column == 0:
                axis.set_ylabel("precision")
            if u == len(units) - 1:
                axis.set_xlabel("deployment target")
    delta_bar = fig.colorbar(images[0], cax=bars[0])
    delta_bar.set_label("delta (pp); line: budget", fontsize=8)
    delta_bar.ax.axhline(-budget, color="black", linewidth=1.5)
    fig.colorbar(images[1], cax=bars[1]).set_label(f"size ({unit_name})", fontsize=8)
    status = table["status"].astype(str)
    counts = [f"{int((status == 'FINISHED').sum())} finished", f"{int((status == 'SKIPPED').sum())} skipped",
              f"{int(status.isin(['FAILED', 'KILLED']).sum())} failed"]
    fig.suptitle(f"Sweep overview: {len(table)} jobs ({', '.join(counts)})"
                 + (f"; green = within the -{budget:g} pp budget" if max_drop is not None else ""), fontsize=10)
    info = {"cells": cells, "precisions": precisions, "targets": targets, "compute_units": units,
            "size_unit": unit_name}
    return fig, info


def overview_png(path: Path, table, max_drop: float | None = None) -> Path:
    """One figure for a whole sweep: heat maps of accuracy delta (pp) and model size over
    precision (rows) x target (columns), one row of panels per compute unit; skipped, failed
    and missing cells are hatched and named.

    ``table`` is a sweep's runs table (:func:`precision_sweep.tracking.summary.runs_table`):
    ``precision``, ``target``, ``compute_units``, ``status``, ``accuracy_delta`` (fraction),
    ``model_size_bytes``. ``max_drop`` (pp) centres the delta colours on the budget.
    """
    fig, _ = overview_figure(table, max_drop)
    return _save(fig, path)

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
