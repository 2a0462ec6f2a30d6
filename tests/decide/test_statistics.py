"""Paired statistics on constructed prediction pairs whose answers are known in closed form."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from precision_sweep.metrics.statistics import confusion, paired_report, paired_statistics, per_class_deltas


def _pairs(n: int, to_wrong: int, to_right: int, both_wrong: int = 0):
    """Labels, baseline and variant top-1 with the given discordant counts."""
    labels = np.arange(n) % 10
    reference = labels.copy()
    predicted = labels.copy()
    wrong = lambda idx: (labels[idx] + 1) % 10  # noqa: E731
    a = np.arange(to_wrong)
    b = np.arange(to_wrong, to_wrong + to_right)
    c = np.arange(to_wrong + to_right, to_wrong + to_right + both_wrong)
    predicted[a] = wrong(a)
    reference[b] = wrong(b)
    reference[c] = wrong(c)
    predicted[c] = wrong(c)
    return predicted, reference, labels


def test_mcnemar_p_is_the_exact_two_sided_binomial_closed_form():
    predicted, reference, labels = _pairs(450, to_wrong=12, to_right=3, both_wrong=5)
    stats = paired_statistics(predicted, reference, labels)
    n, k = 15, 3
    closed_form = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert stats["mcnemar_p"] == pytest.approx(closed_form, rel=1e-12)
    assert closed_form == pytest.approx(0.03515625)
    assert (stats["flips_to_wrong"], stats["flips_to_right"]) == (12, 3)


def _binomial_interval(confidence: float, n: int, lost: int) -> tuple[float, float]:
    """The percentile interval of a paired delta where the variant loses ``lost`` of ``n``
    samples and gains none, in closed form: each bootstrap resample's delta is -K/n with
    K ~ Binomial(n, lost/n), so its ends are that distribution's quantiles."""
    from scipy.stats import binom

    tail = (1 - confidence) / 2
    return -binom.ppf(1 - tail, n, lost / n) / n, -binom.ppf(tail, n, lost / n) / n


@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_ci_is_the_bootstrap_interval_at_the_confidence_asked_and_excludes_zero_when_it_should(confidence):
    # Variant loses 20 of 400 samples the baseline gets right: delta is exactly -0.05.
    predicted, reference, labels = _pairs(400, to_wrong=20, to_right=0)
    stats = paired_statistics(predicted, reference, labels, confidence=confidence, n_resamples=4000)
    assert stats["accuracy_delta_ci_low"] <= -0.05 <= stats["accuracy_delta_ci_high"]
    assert stats["accuracy_delta_ci_high"] < 0  # significant loss: the CI excludes 0
    # The ends are the closed-form quantiles, within one sample (1/400) of resampling noise; the
    # other level's interval is not (95 %: -0.0725..-0.03, 90 %: -0.0675..-0.0325: its low end
    # lies two samples away).
    low, high = _binomial_interval(confidence, 400, 20)
    assert stats["accuracy_delta_ci_low"] == pytest.approx(low, abs=1 / 400 + 1e-9)
    assert stats["accuracy_delta_ci_high"] == pytest.approx(high, abs=1 / 400 + 1e-9)
    other = _binomial_interval({0.95: 0.90, 0.90: 0.95}[confidence], 400, 20)
    assert abs(stats["accuracy_delta_ci_low"] - other[0]) > 1 / 400 or abs(stats["accuracy_delta_ci_high"] - other[1]) > 1 / 400
    assert stats["mcnemar_p"] == pytest.approx(2 / 2 ** 20)


def test_the_default_interval_is_95_percent():
    predicted, reference, labels = _pairs(400, to_wrong=20, to_right=0)
    assert paired_statistics(predicted, reference, labels) == paired_statistics(predicted, reference, labels, confidence=0.95)


def test_ci_is_seeded_and_symmetric_flips_straddle_zero():
    predicted, reference, labels = _pairs(300, to_wrong=6, to_right=6)
    first = paired_statistics(predicted, reference, labels, seed=3)
    assert first == paired_statistics(predicted, reference, labels, seed=3)
    assert first["accuracy_delta_ci_low"] < 0 < first["accuracy_delta_ci_high"]
    assert first["mcnemar_p"] == pytest.approx(1.0)


def test_identical_predictions_give_a_point_interval():
    predicted, reference, labels = _pairs(50, 0, 0, both_wrong=4)
    stats = paired_statistics(predicted, reference, labels)
    assert stats == {"accuracy_delta_ci_low": 0.0, "accuracy_delta_ci_high": 0.0, "mcnemar_p": 1.0,
                     "flips_to_wrong": 0, "flips_to_right": 0}


def test_per_class_deltas_and_confusion():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    reference = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    predicted = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    table = per_class_deltas(predicted, reference, labels, ["zero", "one"])
    assert table["class"].tolist() == ["zero", "one"]
    assert table["accuracy_delta"].tolist() == pytest.approx([-0.5, 0.25])
    assert table["flips_to_wrong"].tolist() == [2, 0] and table["flips_to_right"].tolist() == [0, 1]
    assert confusion(predicted, labels, 2).tolist() == [[2, 2], [0, 4]]


def test_paired_report_writes_the_table_and_a_png(tmp_path):
    predicted, reference, labels = _pairs(100, to_wrong=4, to_right=1)
    eye = np.eye(10, dtype=np.float32)
    metrics, paths = paired_report(eye[predicted], eye[reference], labels, [str(i) for i in range(10)], tmp_path, title="t")
    assert metrics["flips_to_wrong"] == 4
    assert [p.name for p in paths] == ["per_class.csv", "confusion.png", "confusion.csv"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_copies_of_one_image_are_resampled_together():
    """Nine shifted copies of each image (dataset.shifts=1) err together: with their groups the
    interval is the one of the 200 images themselves (the same draws, to rounding), where
    resampling the 1,800 copies as independent samples gives one about three times narrower."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    reference = labels.copy()
    predicted = np.where(rng.uniform(size=200) < 0.1, 1 - labels, labels)  # 10 % of images flip to wrong
    images = paired_statistics(predicted, reference, labels, seed=5)
    copies = [np.tile(a, 9) for a in (predicted, reference, labels)]
    groups = np.tile(np.arange(200), 9)
    grouped = paired_statistics(*copies, seed=5, groups=groups)
    naive = paired_statistics(*copies, seed=5)
    for key in ("accuracy_delta_ci_low", "accuracy_delta_ci_high"):
        assert grouped[key] == pytest.approx(images[key], abs=1e-12)
    width = {name: s["accuracy_delta_ci_high"] - s["accuracy_delta_ci_low"] for name, s in
             (("grouped", grouped), ("naive", naive))}
    assert 2.5 < width["grouped"] / width["naive"] < 3.5


def test_the_standard_error_is_the_paired_differences_and_resamples_copies_together():
    """The bootstrap's standard error of the delta is the closed form sd/sqrt(n) of the paired
    differences (to the bootstrap's noise), 0 when every pair agrees, and with the copies'
    groups the one of the images themselves (three times the naive one for nine copies)."""
    from precision_sweep.metrics.statistics import mean_delta_bootstrap

    def mean_delta_standard_error(variant, baseline, n_resamples, seed, groups=None):
        return mean_delta_bootstrap(variant, baseline, 0.95, n_resamples, seed, groups)[2]

    rng = np.random.default_rng(4)
    variant = (rng.uniform(size=2000) < 0.9).astype(float)
    baseline = (rng.uniform(size=2000) < 0.92).astype(float)
    closed = np.std(variant - baseline) / np.sqrt(2000)
    assert mean_delta_standard_error(variant, baseline, 4000, 0) == pytest.approx(closed, rel=0.06)
    assert mean_delta_standard_error(baseline, baseline, 4000, 0) == 0.0
    images = mean_delta_standard_error(variant[:200], baseline[:200], 4000, 1)
    copies = [np.tile(a[:200], 9) for a in (variant, baseline)]
    grouped = mean_delta_standard_error(*copies, 4000, 1, groups=np.tile(np.arange(200), 9))
    assert grouped == pytest.approx(images, rel=1e-9)
    assert 2.5 < grouped / mean_delta_standard_error(*copies, 4000, 1) < 3.5
