"""PNG figures of a per-layer mixed-precision search (issue 24), drawn with matplotlib's Agg
backend (no display).

``sensitivity_png``: the per-layer sensitivity table as a heat map, one row per weight-bearing
op in program order, one column per setting (most bits first), coloured by the accuracy delta
when only that op is compressed; ``search_front_png``: the search's evaluated points, size
against delta, with the Pareto front, the budget, the chosen trial and the uniform recipes for
reference.

Like :mod:`precision_sweep.metrics.plots` (whose backend, saving and size unit these share),
each ``*_png`` has a ``*_figure`` twin returning the open figure and what it shows, so tests
read the figure's structure instead of its pixels.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from precision_sweep.metrics.plots import _format_size, _place_labels, _pyplot, _save, size_unit

# A row of the heat map is ROW_IN inches tall (tick labels of ~8 pt, one per row, never
# touch), ANNOTATED_ROW_IN when the cells carry their value; the panel stops growing at
# MAX_PANEL_IN, after which rows get thinner, the labels smaller and, below MIN_TICK_PT,
# only every n-th row is named.
ROW_IN = 0.18
ANNOTATED_ROW_IN = 0.28
MAX_ANNOTATED_ROWS = 40
MAX_PANEL_IN = 38.0
MIN_TICK_PT = 5.0
MAX_LABEL_CHARS = 48


# --------------------------------------------------------------------------------- sensitivity


def format_count(n: float) -> str:
    """``950`` -> ``950``, ``12345`` -> ``12.3k``, ``4200000`` -> ``4.2M``."""
    n = int(n)
    if abs(n) < 1000:
        return str(n)
    if abs(n) < 1_000_000:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e6:.1f}M"


def _row_labels(rows) -> list[str]:
    """``<layer> (<op_type>, <weights>)``, the op's name standing in for a missing layer; a
    Keras layer split over several ops names the op too, so no two rows read the same."""
    layers = [str(layer) if isinstance(layer, str) else "" for layer in rows["layer"]]
    repeated = {layer for layer in layers if layer and layers.count(layer) > 1}
    labels = []
    for layer, row in zip(layers, rows.itertuples()):
        name = (f"{layer}: {row.op}" if layer in repeated else layer) if layer else str(row.op)
        suffix = f" ({row.op_type}, {format_count(row.weights)})"
        keep = MAX_LABEL_CHARS - len(suffix)
        labels.append((name if len(name) <= keep else name[: keep - 1] + "…") + suffix)
    return labels


def sensitivity_figure(table, max_drop: float, title: str = ""):
    """The figure of :func:`sensitivity_png` and what it shows.

    Returns
    -------
    (Figure, dict)
        The open figure and ``{"rows": row labels top to bottom, "ops": op names in the same
        order, "settings": column labels left to right, "below_budget": [(op, setting)],
        "missing": [(op, setting)], "annotated": whether cells carry their value,
        "label_stride": every how many rows a label is shown, "limits": (low, high) of the
        colours}``.
    """
    import pandas as pd
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    table = table.reset_index(drop=True)
    table = table.assign(op=table["op"].astype(str), choice=table["choice"].astype(str),
                         delta_pp=pd.to_numeric(table["delta_pp"], errors="coerce"))
    ops = list(dict.fromkeys(table["op"]))
    first = table.drop_duplicates("op", keep="first").set_index("op").loc[ops].reset_index()
    bits = table.groupby("choice", sort=False)["bits_per_weight"].mean()
    settings = sorted(bits.index, key=lambda choice: (-float(bits[choice]), choice))
    # a repeated (op, setting) row is a re-measurement: the later one wins
    delta = (table.drop_duplicates(["op", "choice"], keep="last")
             .pivot(index="op", columns="choice", values="delta_pp").reindex(index=ops, columns=settings))
    values = delta.to_numpy(float)
    n, k = values.shape
    budget = abs(float(max_drop)) or 1.0
    low, high = -3 * budget, budget

    annotated = n <= MAX_ANNOTATED_ROWS
    row_in = ANNOTATED_ROW_IN if annotated else min(ROW_IN, MAX_PANEL_IN / n)
    tick_pt = min(8.0, 0.62 * row_in * 72)
    stride = 1
    if tick_pt < MIN_TICK_PT:  # too thin to name every row: name every stride-th one
        stride = math.ceil(MIN_TICK_PT / tick_pt)
        tick_pt = MIN_TICK_PT
    labels = _row_labels(first)
    columns = [f"{choice}\n{float(bits[choice]):.3g} b/w" for choice in settings]

    # Laid out in inches from the counts and label lengths (constrained layout would cost more
    # than the figure and still let 150 labels collide).
    char_in = 0.56 * tick_pt / 72  # an average character of the tick font
    names = 0.35 + char_in * max(map(len, labels))
    cell_w = max(0.6, 0.057 * max(map(len, settings)) + 0.15)
    panel_w = max(2.8, cell_w * k)
    panel_h = max(1.0, row_in * n)
    width = names + panel_w + 0.35
    per_line = max(40, int(width / 0.075))  # characters of 9 pt text per line
    heading = [title] if title else []
    heading.append(f"Per-layer sensitivity: {n} op{'s' * (n != 1)} x {k} setting{'s' * (k != 1)}, "
                   f"accuracy delta when only that op is compressed · crossed: below the -{budget:g} pp "
                   f"budget · grey: not in the op's space")
    lines = [part for line in heading for part in textwrap.wrap(line, per_line)]
    bar_top = 0.12 + 0.17 * len(lines) + 0.42  # the title, then the bar's label and ticks above it
    bar_h, col_labels = 0.13, 0.42
    top = bar_top + bar_h + 0.08 + col_labels
    bottom = col_labels + 0.1 if n > MAX_ANNOTATED_ROWS else 0.15  # a tall panel repeats its columns below
    height = top + panel_h + bottom
    fig = plt.figure(figsize=(width, height))
    fig.suptitle("\n".join(lines), fontsize=9, y=1 - 0.1 / height, va="top")
    axis = fig.add_axes((names / width, bottom / height, panel_w / width, panel_h / height))
    bar_axis = fig.add_axes((names / width, (height - bar_top - bar_h) / height, panel_w / width, bar_h / height))

    # missing cells are transparent: the hatched grey axes show through
    colormap = plt.get_cmap("RdBu").with_extremes(bad=(0, 0, 0, 0))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=low, vmax=high)
    image = axis.imshow(np.ma.masked_invalid(np.clip(values, low, high)), cmap=colormap, norm=norm,
                        aspect="auto", interpolation="nearest")
    axis.set_facecolor("0.82")
    axis.patch.set_hatch("//")
    axis.patch.set_edgecolor("0.7")
    # fixed ticks: the two-slope norm squeezes an automatic locator's ticks on the negative side
    bar = fig.colorbar(image, cax=bar_axis, orientation="horizontal", extend="both",
                       ticks=[low, -2 * budget, -budget, 0.0, high])
    bar.ax.xaxis.set_ticks_position("top")
    bar.ax.xaxis.set_label_position("top")
    bar.ax.tick_params(labelsize=7)
    bar.ax.xaxis.set_major_formatter(lambda value, _: f"{value:+g}" if value else "0")
    bar.set_label(f"accuracy delta vs FP32 (pp), clipped to [{low:g}, +{high:g}]; line: budget", fontsize=8)
    bar.ax.axvline(-budget, color="black", linewidth=1.5)

    failing = np.isfinite(values) & (values < -budget)
    rows_failing, cols_failing = np.nonzero(failing)
    if len(rows_failing):
        # one collection for every crossed cell: hundreds of patches would cost seconds
        cells = [Rectangle((j - 0.5, i - 0.5), 1, 1) for i, j in zip(rows_failing, cols_failing)]
        axis.add_collection(PatchCollection(cells, facecolor="none", edgecolor="0.1", linewidth=0,
                                            hatch="x", alpha=0.55))
    if annotated:
        fontsize = 7 if k <= 8 else 6
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            r, g, b, _ = colormap(norm(np.clip(values[i, j], low, high)))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            axis.text(j, i, f"{values[i, j]:+.2f}", ha="center", va="center", fontsize=fontsize,
                      color="white" if dark else "black", fontweight="bold" if failing[i, j] else "normal",
                      bbox=dict(boxstyle="square,pad=0.1", facecolor=(r, g, b), linewidth=0) if failing[i, j] else None,
                      in_layout=False)
    axis.set_xlim(-0.5, k - 0.5)
    axis.set_ylim(n - 0.5, -0.5)
    axis.hlines(np.arange(1, n) - 0.5, -0.5, k - 0.5, color="white", linewidth=0.8 if annotated else 0.4)
    axis.vlines(np.arange(1, k) - 0.5, -0.5, n - 0.5, color="white", linewidth=1.5)
    shown = np.arange(0, n, stride)
    axis.set_yticks(shown, [labels[i] for i in shown], fontsize=tick_pt)
    axis.tick_params(axis="y", length=2, pad=2)
    axis.set_xticks(range(k), columns, fontsize=7)
    axis.tick_params(axis="x", top=True, labeltop=True, bottom=n > MAX_ANNOTATED_ROWS,
                     labelbottom=n > MAX_ANNOTATED_ROWS, length=2)

    info = {"rows": labels, "ops": ops, "settings": settings,
            "below_budget": [(ops[i], settings[j]) for i, j in zip(rows_failing, cols_failing)],
            "missing": [(ops[i], settings[j]) for i, j in zip(*np.nonzero(~np.isfinite(values)))],
            "annotated": annotated, "label_stride": stride, "limits": (low, high)}
    return fig, info


def sensitivity_png(path: Path, table, max_drop: float, title: str = "") -> Path:
    """The per-layer sensitivity table as a heat map: ops (rows, program order) x settings
    (columns, bits per weight descending), coloured by ``delta_pp`` on a diverging map centred
    at 0 and clipped at ``-3 * max_drop .. +max_drop``; cells below ``-max_drop`` are crossed,
    settings outside an op's space are hatched grey.

    ``table`` has columns ``op``, ``layer`` (may be empty), ``op_type``, ``weights``,
    ``choice``, ``bits_per_weight``, ``delta_pp`` (only that op compressed with that setting),
    and may have ``ci_low_pp``, ``ci_high_pp``, ``agreement``, ``size_bytes`` (not drawn).
    Up to ``MAX_ANNOTATED_ROWS`` rows each cell carries its value; the figure grows by
    ``ROW_IN`` inches a row up to ``MAX_PANEL_IN``, so row labels never overlap.
    """
    fig, _ = sensitivity_figure(table, max_drop, title)
    return _save(fig, path)


# ------------------------------------------------------------------------------ search front

_SOURCE_COLOURS = {"sensitivity": "tab:purple", "greedy": "tab:orange", "tpe": "tab:blue",
                   "nsga2": "tab:cyan", "uniform": "0.45"}


def search_front_figure(points, max_drop: float, chosen: int | None = None, uniform=None, title: str = ""):
    """The figure of :func:`search_front_png` and what it shows.

    Returns
    -------
    (Figure, dict)
        The open figure and ``{"labels": the placed texts (the chosen trial's first),
        "boxes": their pixel boxes, "chosen": the chosen trial's text or None, "front":
        trials on the front by size, "below": trials drawn on the lower edge (beyond the
        view), "x_unit": unit of the x axis}``.
    """
    import pandas as pd

    plt = _pyplot()
    budget = abs(float(max_drop))
    points = points.reset_index(drop=True)
    points = points.assign(size_bytes=points["size_bytes"].astype(float), delta_pp=points["delta_pp"].astype(float),
                           ok=points["ok"].astype(bool), on_front=points["on_front"].astype(bool),
                           source=points["source"].astype(str))
    uniform = (uniform.reset_index(drop=True).assign(size_bytes=lambda u: u["size_bytes"].astype(float),
                                                     delta_pp=lambda u: u["delta_pp"].astype(float))
               if uniform is not None and len(uniform) else None)
    sizes = pd.concat([points["size_bytes"]] + ([uniform["size_bytes"]] if uniform is not None else []))
    unit, scale = size_unit(float(sizes.max()))
    points["x"] = points["size_bytes"] / scale
    if uniform is not None:
        uniform["x"] = uniform["size_bytes"] / scale
    pick = None
    if chosen is not None and (points["trial"] == chosen).any():
        pick = points[points["trial"] == chosen].iloc[0]
    has_ci = {"ci_low_pp", "ci_high_pp"} <= set(points) and points["ci_low_pp"].notna().any()

    # The view: the data down to -4x the budget (a search tries some ruinous points; letting
    # them set the scale would flatten everything near the budget), always the budget, 0 and
    # the chosen point; what lies below is drawn on the lower edge.
    deltas = pd.concat([points["delta_pp"]] + ([uniform["delta_pp"]] if uniform is not None else []))
    floor = -4 * max(budget, 0.25)
    low = max(float(deltas.min()), floor)
    if pick is not None:
        low = min(low, float(pick["delta_pp"]))
        if has_ci and pd.notna(pick["ci_low_pp"]):
            low = min(low, float(pick["ci_low_pp"]))
    high = max(float(deltas.max()), 0.0)
    if has_ci:
        high = max(high, float(points["ci_high_pp"].max()))
    low, high = min(low, -budget), max(high, 0.0)
    span = max(high - low, 0.5)
    y_low, y_high = low - 0.12 * span, high + 0.25 * span
    edge = low - 0.06 * span  # where the points below the view sit

    fig = plt.figure(figsize=(9, 6))
    axis = fig.add_axes((0.085, 0.17, 0.895, 0.72))
    shown_y = points["delta_pp"].where(points["delta_pp"] >= y_low, edge)
    below = points["delta_pp"] < y_low
    for source, part in points.groupby("source", sort=False):
        colour = _SOURCE_COLOURS.get(source, "0.3")
        named = False  # one legend entry per source, whichever of its groups is drawn first
        for ok, marker_face in ((True, colour), (False, "none")):
            rows = part[(part["ok"] == ok) & ~below.loc[part.index]]
            if len(rows):
                axis.scatter(rows["x"], shown_y[rows.index], s=18, marker="o", facecolors=marker_face,
                             edgecolors=colour, alpha=0.4, linewidths=0.8,
                             label=None if named else source, zorder=2)
                named = True
        clipped = part[below.loc[part.index]]
        if len(clipped):
            axis.scatter(clipped["x"], shown_y[clipped.index], s=22, marker="v", color=colour, alpha=0.5,
                         clip_on=False, zorder=2)
    if below.any():
        axis.scatter([], [], marker="v", color="0.4",
                     label=f"{int(below.sum())} below the view (down to {points['delta_pp'].min():+.1f} pp)")
    if not points["ok"].all():
        axis.scatter([], [], s=18, facecolors="none", edgecolors="0.4", label="hollow: over budget on the search split")

    front = points[points["on_front"]].sort_values(["x", "delta_pp"])
    if len(front):
        front_y = front["delta_pp"].clip(lower=edge)
        axis.step(front["x"], front_y, where="post", color="0.15", linewidth=1.3, zorder=3, label="Pareto front")
        if has_ci:  # no interval on a point moved to the lower edge: it would lie
            seen = front["delta_pp"] >= y_low
            lo_err = (front["delta_pp"] - front["ci_low_pp"]).clip(lower=0).fillna(0).where(seen, 0)
            hi_err = (front["ci_high_pp"] - front["delta_pp"]).clip(lower=0).fillna(0).where(seen, 0)
            axis.errorbar(front["x"], front_y, yerr=[lo_err, hi_err], linestyle="none", marker="o", markersize=4,
                          color="0.15", capsize=2, linewidth=0.8, zorder=3)
        else:
            axis.scatter(front["x"], front_y, s=16, color="0.15", zorder=3)
    axis.axhline(-budget, color="tab:red", linestyle="--", linewidth=1.2, label=f"budget: -{budget:g} pp", zorder=1)
    axis.axhline(0, color="0.6", linewidth=0.8, zorder=1)
    if uniform is not None:
        uniform_y = uniform["delta_pp"].where(uniform["delta_pp"] >= y_low, edge)
        axis.scatter(uniform["x"], uniform_y, s=60, marker="D", facecolors="white", edgecolors="black",
                     linewidths=1.3, zorder=4, label="uniform recipe", clip_on=False)
    if pick is not None:
        axis.scatter([pick["x"]], [pick["delta_pp"]], s=260, facecolors="none", edgecolors="darkgreen",
                     linewidths=2.5, zorder=5, label=f"chosen: trial {int(pick['trial'])}")

    xs = pd.concat([points["x"]] + ([uniform["x"]] if uniform is not None else []))
    lo, hi = float(xs.min()), float(xs.max())
    if lo > 0 and hi / lo > 10:
        from matplotlib.ticker import LogLocator, NullFormatter

        axis.set_xscale("log")
        factor = (hi / lo) ** 0.1
        axis.set_xlim(lo / factor, hi * factor)
        # sizes read as 0.2, 0.5, 1, 2 MB rather than 2 x 10^-1
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
        axis.xaxis.set_minor_formatter(NullFormatter())
    else:
        pad = 0.1 * (hi - lo if hi > lo else max(hi, 1.0))
        axis.set_xlim(max(0.0, lo - pad), hi + pad)
    axis.set_ylim(y_low, y_high)
    axis.set_xlabel(f"model size ({unit})")
    axis.set_ylabel("accuracy delta vs FP32 baseline (pp)")
    axis.grid(True, alpha=0.3)
    handles, names = axis.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncols=min(len(names), 5), fontsize=7.5, frameon=False)

    pick_text = None
    if pick is not None:
        ci = (f" [{pick['ci_low_pp']:+.2f}, {pick['ci_high_pp']:+.2f}]"
              if has_ci and pd.notna(pick.get("ci_low_pp")) and pd.notna(pick.get("ci_high_pp")) else "")
        pick_text = (f"chosen: trial {int(pick['trial'])} ({pick['source']})\n"
                     f"{_format_size(pick['size_bytes'], unit, scale)}, {pick['delta_pp']:+.2f} pp{ci}")
        verdict = pick_text.replace("\n", ", ")
    else:
        verdict = "no trial chosen"
    n_front, n_ok = int(points["on_front"].sum()), int(points["ok"].sum())
    heading = ([title] if title else []) + [
        f"Mixed-precision search: {len(points)} point{'s' * (len(points) != 1)}, {n_ok} within budget, "
        f"{n_front} on the front · budget -{budget:g} pp · {verdict}"]
    axis.set_title("\n".join(part for line in heading for part in textwrap.wrap(line, 120)), fontsize=9.5)

    fig.canvas.draw()  # the labels are placed in pixels: the axes' limits and scale must be final
    items = []
    if pick is not None:
        items.append((float(pick["x"]), float(pick["delta_pp"]), pick_text, dict(color="darkgreen", fontweight="bold")))
    if uniform is not None:
        for row, y in zip(uniform.itertuples(), uniform_y):
            text = str(row.label) + (f" ({row.delta_pp:+.1f} pp)" if row.delta_pp < y_low else "")
            items.append((float(row.x), float(y), text, dict(color="black")))
    transform = axis.transData
    obstacles = [(px - 5, py - 5, px + 5, py + 5)
                 for px, py in transform.transform(np.column_stack([points["x"], shown_y]).astype(float))]
    if uniform is not None:
        obstacles += [(px - 7, py - 7, px + 7, py + 7)
                      for px, py in transform.transform(np.column_stack([uniform["x"], uniform_y]).astype(float))]
    if pick is not None:  # the ring around the chosen point
        px, py = transform.transform((pick["x"], pick["delta_pp"]))
        obstacles.append((px - 13, py - 13, px + 13, py + 13))
    _, budget_y = transform.transform((lo, -budget))
    lines = [(-1e9, budget_y - 2, 1e9, budget_y + 2)]
    if len(front) > 1:  # the step line's segments, avoided when possible
        corners = transform.transform(np.column_stack([front["x"], front["delta_pp"].clip(lower=edge)]).astype(float))
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            lines += [(x0, y0 - 2, x1, y0 + 2), (x1 - 2, min(y0, y1), x1 + 2, max(y0, y1))]
    boxes = _place_labels(fig, axis, items, obstacles, [], lines)
    info = {"labels": [item[2] for item in items], "boxes": boxes, "chosen": pick_text,
            "front": [int(t) for t in front["trial"]], "below": [int(t) for t in points.loc[below, "trial"]],
            "x_unit": unit}
    return fig, info


def search_front_png(path: Path, points, max_drop: float, chosen: int | None = None, uniform=None,
                     title: str = "") -> Path:
    """The search's evaluated points: model size (x, KB or MB, log scale when it spans a
    decade) against accuracy delta in pp (y).

    ``points`` has columns ``trial``, ``size_bytes``, ``delta_pp``, ``ok`` (met the budget on
    the search split; hollow markers when not), ``on_front``, ``source`` (colour), optionally
    ``ci_low_pp``/``ci_high_pp`` (error bars on the front). All points are drawn faintly, the
    front as a step line, the budget at ``-max_drop``; the ``chosen`` trial is ringed and
    named; ``uniform`` rows (``label``, ``size_bytes``, ``delta_pp``) are labelled diamonds.
    Points below ``-4 * max_drop`` sit on the lower edge as triangles.
    """
    fig, _ = search_front_figure(points, max_drop, chosen, uniform, title)
    return _save(fig, path)
