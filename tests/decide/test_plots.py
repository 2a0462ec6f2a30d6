"""The plots read at a glance: real matplotlib figures of real frames and matrices, checked
through what the figure holds (its texts, label boxes and axes), not its pixels."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from precision_sweep.metrics import plots
from precision_sweep.metrics.statistics import confusion, paired_report
from precision_sweep.pick.decision import log_decision
from precision_sweep.pick.report import pareto_view
from precision_sweep.pick.select import pick

plt = plots._pyplot()

# The default digits sweep as logged (3 precisions x 4 iOS targets, int8 x ios15 skipped).
DIGITS = [("fp32", t, 161861) for t in ("ios15", "ios16", "ios17", "ios18")] + [
    ("fp16", "ios15", 86633), ("fp16", "ios16", 85979), ("fp16", "ios17", 85979), ("fp16", "ios18", 85979),
    ("int8", "ios15", None), ("int8", "ios16", 49635), ("int8", "ios17", 49635), ("int8", "ios18", 48809),
]


def _table(rows) -> pd.DataFrame:
    """A runs table (tracking.summary.runs_table's columns) from (precision, target, units,
    status, delta fraction, size bytes, CI half-width fraction)."""
    records = []
    for i, (precision, target, units, status, delta, size, half) in enumerate(rows):
        evaluated = status == "FINISHED"
        records.append({
            "run_id": f"run{i:03d}", "precision": precision, "target": target, "compute_units": units,
            "device": "m1", "status": status, "accuracy": 0.97 + delta if evaluated else np.nan,
            "accuracy_delta": delta if evaluated else np.nan, "agreement": 1 + delta if evaluated else np.nan,
            "note": "" if status != "SKIPPED" else f"{precision} cannot deploy at {target}",
            "model_size_bytes": size if evaluated else np.nan, "start_time": i,
            "metric:accuracy_delta_ci_low": delta - half if evaluated else np.nan,
            "metric:accuracy_delta_ci_high": delta + half if evaluated else np.nan,
        })
    return pd.DataFrame(records)


def digits_table() -> pd.DataFrame:
    return _table([(p, t, "all", "FINISHED" if size else "SKIPPED", 0.0, size, 0.0) for p, t, size in DIGITS])


def full_grid(units=("all", "cpu_only"), targets=("ios15", "ios16", "ios17", "ios18")) -> pd.DataFrame:
    """6 precisions x targets x compute units: sizes shrink a little at iOS 18, deltas differ
    by compute unit for the low-bit precisions, some cells skipped and one failed."""
    sizes = {"fp32": 160e3, "fp16": 85e3, "int8": 49e3, "int8_per_block": 54e3, "palettize": 30e3, "int4_per_block": 38e3}
    deltas = {"fp32": 0.0, "fp16": 0.0, "int8": -0.002, "int8_per_block": -0.001, "palettize": -0.009, "int4_per_block": -0.031}
    rows = []
    for precision, target, unit in itertools.product(sizes, targets, units):
        needs_18 = precision in ("int8_per_block", "int4_per_block") and target != "ios18"
        if needs_18 or (precision != "fp32" and precision != "fp16" and target == "ios15"):
            rows.append((precision, target, unit, "SKIPPED", np.nan, np.nan, 0))
            continue
        if (precision, target, unit) == ("palettize", "ios16", "cpu_only"):
            rows.append((precision, target, unit, "FAILED", np.nan, np.nan, 0))
            continue
        delta = deltas[precision] * (1.5 if unit == "cpu_only" else 1.0)
        size = sizes[precision] - (800 if target == "ios18" else 0)
        rows.append((precision, target, unit, "FINISHED", delta, size, 0.002 + abs(delta) / 2))
    return _table(rows)


def _pareto(table, max_drop=1.0, rule="confident"):
    decision = pick(table, max_drop, "model_size_bytes", rule)
    view = pareto_view(decision)
    fig, info = plots.pareto_figure(view, "model_size_bytes", max_drop, (decision.pick or {}).get("run_id"), rule)
    return fig, info, decision


def _assert_labels_apart_and_inside(fig, info):
    axis = fig.axes[0]
    frame = axis.get_window_extent(fig.canvas.get_renderer())
    boxes = info["boxes"]
    assert len(boxes) == len(info["labels"])
    for box in boxes:
        assert frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1, box
    for a, b in itertools.combinations(boxes, 2):
        assert plots._overlap(a, b) == 0, (a, b)
    # the boxes are those of the drawn texts
    drawn = {t.get_text() for t in axis.texts}
    assert drawn == set(info["labels"])


def test_pareto_of_the_digits_sweep_labels_each_point_once_and_names_the_pick():
    fig, info, decision = _pareto(digits_table())
    try:
        axis = fig.axes[0]
        assert decision.pick["precision"] == "int8" and decision.pick["target"] == "ios18"
        assert info["pick"] == "pick: int8 at ios18\n47.7 KB, +0.00 pp"
        labels = info["labels"]
        # four targets at one size and delta: one label
        assert "fp32 · ios15–18" in labels and sum("fp32" in text for text in labels) == 1
        # 84.6 KB at iOS 15, 84.0 KB above: markers that touch, one label
        assert "fp16 · ios15–18" in labels
        # int8 at iOS 16-17 sits next to the pick (48.5 vs 47.7 KB): one label with it
        assert f"{info['pick']}\nalso: int8 · ios16–17" in labels and len(labels) == 3
        assert axis.get_xlabel() == "model size (KB)"
        assert "delta" in axis.get_title() and "47.7 KB" in axis.get_title()
        low, high = axis.get_ylim()
        assert low < -1.0 and high > 0.0  # the budget line and the points, neither on an edge
        budget = [line for line in axis.get_lines() if line.get_label().startswith("budget")]
        assert budget and budget[0].get_ydata()[0] == -1.0
        _assert_labels_apart_and_inside(fig, info)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("units", [("all",), ("all", "cpu_only")])
def test_pareto_of_a_full_grid_keeps_labels_apart(units):
    table = full_grid(units)
    fig, info, _ = _pareto(table)
    try:
        _assert_labels_apart_and_inside(fig, info)
        labels = "\n".join(info["labels"])
        for precision in ("fp32", "fp16", "int8", "palettize", "int4_per_block"):
            assert f"{precision} · " in labels
        assert "fp16 · ios15–18" in labels  # four targets, one label
        if len(units) > 1:  # units named only where they differ: palettize's delta depends on them
            assert "palettize · ios17–18 · cpu_only" in labels
    finally:
        plt.close(fig)


def test_pareto_x_axis_in_mb_for_large_models(tmp_path):
    table = digits_table()
    table["model_size_bytes"] *= 100
    fig, info, _ = _pareto(table)
    try:
        assert info["x_unit"] == "MB" and fig.axes[0].get_xlabel() == "model size (MB)"
        assert info["pick"].endswith("4.65 MB, +0.00 pp")
    finally:
        plt.close(fig)


def _flipped_predictions(n_classes: int, n: int, flips: dict[int, int]):
    """Labels, baseline (right except every 7th sample) and a variant that moves the first
    sample of each class in ``flips`` to the class it maps to."""
    labels = np.arange(n) % n_classes
    reference = labels.copy()
    reference[::7] = (labels[::7] + 1) % n_classes
    predicted = reference.copy()
    for source, target in flips.items():
        first = np.flatnonzero(labels == source)[1]  # [0] may be a baseline error
        predicted[first] = target
    return labels, reference, predicted


def test_confusion_of_1000_classes_shows_only_the_changed_ones_and_the_csv_holds_everything(tmp_path):
    labels, reference, predicted = _flipped_predictions(1000, 3000, {3: 7, 500: 501, 999: 3})
    names = [f"n{i:05d}_synset" for i in range(1000)]
    eye = np.eye(1000, dtype=np.float32)
    metrics, paths = paired_report(eye[predicted], eye[reference], labels, names, tmp_path, n_resamples=50,
                                   title="mobilenet int8/ios18")
    assert [p.name for p in paths] == ["per_class.csv", "confusion.png", "confusion.csv"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the CSV: every non-zero cell of both full matrices
    table = pd.read_csv(paths[2])
    index = {name: i for i, name in enumerate(names)}
    variant, baseline = np.zeros((1000, 1000), int), np.zeros((1000, 1000), int)
    rows, cols = table["true"].map(index).to_numpy(), table["predicted"].map(index).to_numpy()
    variant[rows, cols], baseline[rows, cols] = table["count"], table["baseline_count"]
    assert (variant == confusion(predicted, labels, 1000)).all() and (baseline == confusion(reference, labels, 1000)).all()
    assert (table["change"] == table["count"] - table["baseline_count"]).all()

    moved = predicted != reference
    involved = sum(np.bincount(a[moved], minlength=1000) for a in (labels, predicted, reference))
    fig, info = plots.confusion_figure(confusion(predicted, labels, 1000), confusion(reference, labels, 1000), names,
                                       "t", (metrics["flips_to_wrong"], metrics["flips_to_right"]), involved)
    try:
        changed = [names[i] for i in (3, 7, 500, 501, 999)]
        assert info["selection"] == "changed" and info["shown"] == changed and info["panels"] == 2
        counts, diff = fig.axes[0], fig.axes[2]  # each panel is followed by its colour bar
        assert [t.get_text() for t in counts.get_yticklabels()] == changed
        assert [t.get_text() for t in counts.get_xticklabels()] == [*changed, "other"]
        title = " ".join(fig._suptitle.get_text().split())
        assert "accuracy" in title and f"delta {info['delta_pp']:+.2f} pp" in title
        assert "3 flipped predictions (3 to wrong, 0 to right)" in title
        assert "5 of 1000 classes shown" in title and "confusion.csv" in title
        # one cell text per non-zero cell of the shown difference (the moves and their "other")
        assert sorted(t.get_text() for t in diff.texts) == sorted(["-1", "+1"] * 3)
    finally:
        plt.close(fig)


def test_confusion_beyond_the_subset_size_keeps_the_classes_that_changed_most():
    labels, reference, predicted = _flipped_predictions(1000, 5000, {c: (c + 500) % 1000 for c in range(0, 400, 10)})
    extra = np.flatnonzero(labels == 20)[[0, 2, 3, 4]]
    predicted[extra] = 777  # 20 and 777 take part in more changes than any other class
    variant, baseline = confusion(predicted, labels, 1000), confusion(reference, labels, 1000)
    fig, info = plots.confusion_figure(variant, baseline, [str(i) for i in range(1000)])
    try:
        assert len(info["shown"]) == plots.SUBSET_CLASSES and {"20", "777"} <= set(info["shown"])
        assert f"{plots.SUBSET_CLASSES} of 1000 classes shown" in " ".join(fig._suptitle.get_text().split())
    finally:
        plt.close(fig)


def test_confusion_without_changes_drops_the_difference_panel():
    labels, reference, _ = _flipped_predictions(10, 200, {})
    matrix = confusion(reference, labels, 10)
    fig, info = plots.confusion_figure(matrix, matrix, [str(i) for i in range(10)], "digits fp16/ios16", (0, 0))
    try:
        assert info["panels"] == 1 and len(fig.axes) == 2  # one panel and its colour bar
        assert info["shown"] == [str(i) for i in range(10)] and info["selection"] == "all"
        title = " ".join(fig._suptitle.get_text().split())  # as wrapped to the figure's width
        assert "no flipped prediction" in title and "delta +0.00 pp" in title and "accuracy 85.50%" in title
    finally:
        plt.close(fig)


def test_overview_has_one_cell_per_precision_and_target_per_compute_unit(tmp_path):
    table = full_grid()
    fig, info = plots.overview_figure(table, max_drop=1.0)
    try:
        assert info["targets"] == ["ios15", "ios16", "ios17", "ios18"] and info["compute_units"] == ["all", "cpu_only"]
        assert len(info["precisions"]) == 6 and len(info["cells"]) == 6 * 4 * 2
        assert info["cells"][("cpu_only", "palettize", "ios16")] == "FAILED"
        assert info["cells"][("all", "int4_per_block", "ios15")] == "SKIPPED"
        heat_maps = [axis for axis in fig.axes if axis.images and axis.get_title()]
        assert len(heat_maps) == 4
        for axis in heat_maps:
            texts = [t.get_text() for t in axis.texts]
            assert len(texts) == 24  # one per precision x target
            assert texts.count("skipped") == 8
            assert texts.count("failed") == (1 if "cpu_only" in axis.get_title() else 0)
        delta_all = heat_maps[0]
        assert "delta" in delta_all.get_title() and "all" in delta_all.get_title()
        assert "-3.10" in [t.get_text() for t in delta_all.texts]  # int4_per_block at iOS 18, in pp
        assert "size (KB)" in heat_maps[1].get_title() or "(KB)" in heat_maps[1].get_title()
        assert "47.1" in [t.get_text() for t in heat_maps[1].texts]  # int8 at iOS 18: 48200 B
    finally:
        plt.close(fig)
    assert plots.overview_png(tmp_path / "overview.png", digits_table(), 1.0).read_bytes()[:4] == b"\x89PNG"


class _RecordingClient:
    """The MlflowClient calls log_decision makes, recorded."""

    def __init__(self):
        self.artifacts, self.texts = [], []

    def log_text(self, run_id, text, name):
        self.texts.append(name)

    def log_batch(self, run_id, metrics=(), tags=()):
        pass

    def log_artifact(self, run_id, path):
        from pathlib import Path

        assert Path(path).stat().st_size > 0
        self.artifacts.append(Path(path).name)


def test_log_decision_logs_the_overview_beside_the_pareto_plot(tmp_path):
    client = _RecordingClient()
    log_decision(client, "0", "parent", full_grid(), None, tmp_path)
    assert client.artifacts == ["pareto.png", "pareto.csv", "overview.png"]
    assert client.texts == ["summary.md"]
