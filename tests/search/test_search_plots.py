"""The search's plots (metrics/search_plots.py) read at 1, 3 and 150 layers: real figures of
synthetic sensitivity tables and search points, checked through what the figure holds (tick
label boxes, texts, cells) and through the PNG read back."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from precision_sweep.metrics import plots, search_plots

plt = plots._pyplot()

# label, bits per weight; deliberately not in that order, to check the columns are sorted
SETTINGS = [("pal4", 4.1), ("int8", 8.0), ("pal2", 2.05), ("int4_block32", 4.5), ("sparse50", 8.5), ("pal8", 8.2)]


def sensitivity_table(n_layers: int, n_settings: int, seed: int = 0, missing: bool = False) -> pd.DataFrame:
    """One row per (op, setting), deltas from N(-0.5, 1.5) pp, program order; with
    ``missing`` every third op has no ``pal2`` (not in its space)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_layers):
        weights = int(rng.integers(100, 3_000_000))
        layer = "" if i % 7 == 6 else f"block{i // 4}_conv{i % 4}"
        for choice, bits in SETTINGS[:n_settings]:
            if missing and choice == "pal2" and i % 3 == 0:
                continue
            delta = float(rng.normal(-0.5, 1.5))
            records.append({"op": f"op_{i}_conv", "layer": layer, "op_type": "conv", "weights": weights,
                            "choice": choice, "bits_per_weight": bits, "delta_pp": delta,
                            "ci_low_pp": delta - 0.4, "ci_high_pp": delta + 0.4, "agreement": 0.98,
                            "size_bytes": weights * bits / 8})
    return pd.DataFrame(records)


def search_points(n: int, seed: int = 0, budget: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.uniform(200e3, 2.5e6, n)
    delta = -np.abs(rng.normal(0, 2.0, n)) * (2.5e6 / size) ** 0.5 + rng.normal(0, 0.1, n)
    sources = np.array(["sensitivity", "greedy", "tpe", "nsga2"])[rng.integers(0, 4, n)]
    frame = pd.DataFrame({"trial": np.arange(n), "size_bytes": size, "delta_pp": delta,
                          "ci_low_pp": delta - 0.5, "ci_high_pp": delta + 0.5, "ok": delta >= -budget,
                          "source": sources})
    frame["on_front"] = [not ((frame["size_bytes"] <= s) & (frame["delta_pp"] >= d)
                              & ((frame["size_bytes"] < s) | (frame["delta_pp"] > d))).any()
                         for s, d in zip(frame["size_bytes"], frame["delta_pp"])]
    return frame


UNIFORM = pd.DataFrame({"label": ["fp16", "int8", "pal4", "pal2"], "size_bytes": [5.0e6, 2.5e6, 1.3e6, 0.65e6],
                        "delta_pp": [0.0, -0.1, -1.8, -35.0]})


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # a truncated file fails here
        return image.size


def _ytick_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axis = fig.axes[0]
    labels = [t for t in axis.get_yticklabels() if t.get_visible() and t.get_text()]
    return [t.get_window_extent(renderer) for t in labels]


# --------------------------------------------------------------------------------- sensitivity


def test_weight_counts_read_short():
    assert [search_plots.format_count(n) for n in (950, 12345, 4_200_000)] == ["950", "12.3k", "4.2M"]


def test_sensitivity_rows_in_program_order_columns_by_bits_and_budget_cells_crossed():
    table = sensitivity_table(3, 4)
    table.loc[(table["op"] == "op_1_conv") & (table["choice"] == "int8"), "delta_pp"] = -2.5
    table.loc[(table["op"] == "op_2_conv") & (table["choice"] == "int8"), "delta_pp"] = -0.9
    table.loc[table["op"] == "op_0_conv", "weights"] = 12345
    fig, info = search_plots.sensitivity_figure(table, max_drop=1.0)
    try:
        assert info["ops"] == ["op_0_conv", "op_1_conv", "op_2_conv"]
        assert info["settings"] == ["int8", "int4_block32", "pal4", "pal2"]
        assert info["rows"][0] == "block0_conv0 (conv, 12.3k)"
        assert ("op_1_conv", "int8") in info["below_budget"] and ("op_2_conv", "int8") not in info["below_budget"]
        expected = {(op, choice) for op, choice, delta in table[["op", "choice", "delta_pp"]].itertuples(index=False)
                    if delta < -1.0}
        assert set(info["below_budget"]) == expected
        assert info["annotated"] and info["label_stride"] == 1
        axis = fig.axes[0]
        assert len(axis.texts) == 12 and "-2.50" in {t.get_text() for t in axis.texts}
        assert [t.get_text().split("\n")[0] for t in axis.get_xticklabels()] == info["settings"]
        assert "clipped to [-3, +1]" in fig.axes[1].get_xlabel()
    finally:
        plt.close(fig)


def test_sensitivity_missing_settings_are_left_blank_and_listed():
    table = sensitivity_table(9, 4, missing=True)
    fig, info = search_plots.sensitivity_figure(table, max_drop=0.5)
    try:
        assert set(info["missing"]) == {(f"op_{i}_conv", "pal2") for i in (0, 3, 6)}
        image = fig.axes[0].images[0]
        values = image.get_array()
        column = info["settings"].index("pal2")
        assert values.mask[0, column] and not values.mask[1, column]
        assert len(fig.axes[0].texts) == len(table)  # a missing cell carries no number
        # an op without a Keras layer is named by the op
        assert info["rows"][6].startswith("op_6_conv (conv, ")
    finally:
        plt.close(fig)


def test_sensitivity_of_150_layers_grows_tall_and_its_row_labels_never_overlap(tmp_path):
    small = search_plots.sensitivity_png(tmp_path / "small.png", sensitivity_table(3, 4), max_drop=1.0)
    one = search_plots.sensitivity_png(tmp_path / "one.png", sensitivity_table(1, 1), max_drop=1.0)
    table = sensitivity_table(150, 6, seed=1)
    large = search_plots.sensitivity_png(tmp_path / "large.png", table, max_drop=1.0, title="ResNet-ish")
    (w_small, h_small), (w_one, h_one), (w_large, h_large) = map(_png_size, (small, one, large))
    dpi = plots.DPI
    assert 3 * dpi <= w_small <= 12 * dpi and 2 * dpi <= h_small <= 8 * dpi
    assert 3 * dpi <= w_one <= 12 * dpi and h_one <= h_small
    assert 3 * dpi <= w_large <= 14 * dpi
    assert h_large > 4 * h_small and h_large <= 42 * dpi
    assert h_large >= 150 * 0.15 * dpi  # each row keeps room for its label

    fig, info = search_plots.sensitivity_figure(table, max_drop=1.0)
    try:
        assert not info["annotated"] and not fig.axes[0].texts  # 900 numbers would not read
        assert info["label_stride"] == 1 and len(info["rows"]) == 150
        boxes = _ytick_boxes(fig)
        assert len(boxes) == 150
        for a, b in zip(boxes, boxes[1:]):
            assert a.y0 >= b.y1 or b.y0 >= a.y1, (a, b)  # neighbours only touch, never overlap
        # the labels stay inside the figure (none cut off on the left)
        assert min(box.x0 for box in boxes) >= 0
        # the columns are named at the top and, on a tall panel, again at the bottom
        axis = fig.axes[0]
        assert axis.xaxis.get_tick_params(which="major")["labeltop"]
    finally:
        plt.close(fig)


def test_sensitivity_of_600_layers_names_every_nth_row_and_stays_capped(tmp_path):
    table = sensitivity_table(600, 2, seed=2)
    fig, info = search_plots.sensitivity_figure(table, max_drop=1.0)
    try:
        assert info["label_stride"] > 1
        assert fig.get_figheight() <= 42
        boxes = _ytick_boxes(fig)
        assert len(boxes) == len(range(0, 600, info["label_stride"]))
        for a, b in itertools.pairwise(boxes):
            assert a.y0 >= b.y1 or b.y0 >= a.y1, (a, b)
    finally:
        plt.close(fig)


# -------------------------------------------------------------------------------------- front


def test_front_draws_the_front_budget_pick_and_uniform_references(tmp_path):
    points = search_points(150)
    ok_front = points[points["on_front"] & points["ok"]]
    chosen = int(ok_front.sort_values("size_bytes")["trial"].iloc[0])
    fig, info = search_plots.search_front_figure(points, max_drop=1.0, chosen=chosen, uniform=UNIFORM, title="demo")
    try:
        axis = fig.axes[0]
        assert info["x_unit"] == "MB" and axis.get_xlabel() == "model size (MB)"
        assert info["front"] == [int(t) for t in points[points["on_front"]].sort_values("size_bytes")["trial"]]
        assert info["chosen"].startswith(f"chosen: trial {chosen} (")
        assert info["labels"][0] == info["chosen"]
        assert "pal2 (-35.0 pp)" in info["labels"] and {"fp16", "int8", "pal4"} <= set(info["labels"])
        budget = [line for line in axis.get_lines() if line.get_label().startswith("budget")]
        assert budget and budget[0].get_ydata()[0] == -1.0
        steps = [line for line in axis.get_lines() if line.get_label() == "Pareto front"]
        assert steps and len(steps[0].get_xdata()) == len(info["front"])
        low, high = axis.get_ylim()
        assert low < -1.0 < 0.0 < high and low > -6  # ruinous points do not set the scale
        assert set(info["below"]) == set(points.loc[points["delta_pp"] < low, "trial"])
        frame = axis.get_window_extent(fig.canvas.get_renderer())
        for box in info["boxes"]:
            assert frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
        for a, b in itertools.combinations(info["boxes"], 2):
            assert plots._overlap(a, b) == 0, (a, b)
        assert "demo" in axis.get_title() and "150 points" in axis.get_title()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [1, 150])
def test_front_png_of_1_and_150_points(tmp_path, n):
    points = search_points(n, seed=3)
    path = search_plots.search_front_png(tmp_path / "front.png", points, max_drop=0.5,
                                         chosen=int(points["trial"].iloc[0]),
                                         uniform=UNIFORM if n > 1 else None)
    width, height = _png_size(path)
    assert (width, height) == (9 * plots.DPI, 6 * plots.DPI)


def test_front_without_a_pick_or_ci_still_draws():
    points = search_points(20, seed=4).drop(columns=["ci_low_pp", "ci_high_pp"])
    fig, info = search_plots.search_front_figure(points, max_drop=1.0, chosen=None)
    try:
        assert info["chosen"] is None and info["labels"] == []
        assert "no trial chosen" in fig.axes[0].get_title()
        assert info["x_unit"] == "MB"
    finally:
        plt.close(fig)
