"""Dataset sources and preprocessing, in-process: split, calibration, class order, transforms."""

from __future__ import annotations

import numpy as np
import pytest

from byo_helpers import random_samples, write_image_folder, write_npz
from sweep_testing import compose


def _npz_cfg(path, *overrides):
    return compose(["dataset=npz", f"dataset.path={path}", *overrides]).dataset


def test_calibration_split_is_disjoint_from_the_test_split(tmp_path):
    from precision_sweep.data import load_dataset

    x, y = random_samples(40, (4,), 2)
    x[:, 0] = np.arange(40)  # identifies each sample
    dataset = load_dataset(_npz_cfg(write_npz(tmp_path / "d.npz", x, y), "dataset.test_size=0.5", "dataset.calib_size=5"))
    assert len(dataset.x_test) == 20 and len(dataset.x_calib) == 5
    assert not set(dataset.x_calib[:, 0]) & set(dataset.x_test[:, 0])
    again = load_dataset(_npz_cfg(tmp_path / "d.npz", "dataset.test_size=0.5", "dataset.calib_size=5"))
    assert again.content_hash == dataset.content_hash
    other = load_dataset(_npz_cfg(tmp_path / "d.npz", "dataset.test_size=0.5", "dataset.seed=1"))
    assert other.content_hash != dataset.content_hash


def test_digits_default_keeps_its_split_and_gains_a_calibration_split():
    from precision_sweep.data import load_dataset

    dataset = load_dataset(compose().dataset)
    assert len(dataset.x_test) == 450 and len(dataset.x_calib) == 64
    assert dataset.x_calib.shape[1:] == (8, 8, 1)


def test_preprocessing_order_color_bgr_scale_mean_std_layout():
    from precision_sweep.data.datasets import InputSpec, preprocess

    x = np.zeros((1, 2, 2, 3), dtype=np.float32)
    x[..., 0], x[..., 1], x[..., 2] = 10, 20, 30
    cfg = compose(["dataset=npz", "dataset.path=x", "dataset.channel_order=bgr", "dataset.scale=0.1",
                   "dataset.mean=[1,1,1]", "dataset.std=[2,2,2]", "dataset.layout=nchw"]).dataset
    out = preprocess(x, cfg, InputSpec((3, 2, 2), "float32"))
    assert out.shape == (1, 3, 2, 2)
    assert np.allclose(out[0, :, 0, 0], [(3 - 1) / 2, (2 - 1) / 2, (1 - 1) / 2])
    gray = preprocess(x, compose(["dataset=npz", "dataset.path=x"]).dataset, InputSpec((2, 2, 1), "float32"))
    assert gray.shape == (1, 2, 2, 1) and np.isclose(gray[0, 0, 0, 0], 0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_image_folder_resizes_converts_and_records_class_order(tmp_path):
    from precision_sweep.data import InputSpec, load_dataset

    root = write_image_folder(tmp_path / "images", classes=("b", "a"), per_class=3, size=(9, 7), mode="RGB")
    (root / "a" / "Thumbs.db").write_bytes(b"\0")
    cfg = compose(["dataset=image_folder", f"dataset.path={root}", "dataset.test_size=1.0"]).dataset
    dataset = load_dataset(cfg, InputSpec((5, 6, 1), "float32"))
    assert dataset.x_test.shape == (6, 5, 6, 1) and 0.0 <= dataset.x_test.min() <= dataset.x_test.max() <= 1.0
    assert dataset.class_names == ["a", "b"] and dataset.run_params["dataset_classes"] == "a,b"
    assert dataset.run_params["dataset_skipped_files"] == 1
    assert sorted(np.bincount(dataset.y_test)) == [3, 3]


def test_bad_preprocessing_values_are_user_errors(tmp_path):
    from precision_sweep.data import InputSpec, load_dataset
    from precision_sweep.errors import UserInputError

    path = write_npz(tmp_path / "d.npz", *random_samples(6, (2, 2, 3), 2))
    with pytest.raises(UserInputError, match="dataset.mean has 2 values"):
        load_dataset(_npz_cfg(path, "dataset.mean=[1,2]"), InputSpec((2, 2, 3)))
    # choices and ranges are the schema's: refused when the config is composed or checked
    from hydra.errors import ConfigCompositionException

    from precision_sweep.config_checks import check_ranges

    with pytest.raises(ConfigCompositionException, match="dataset.layout=chwn") as refused:
        _npz_cfg(path, "dataset.layout=chwn")
    assert "expected one of [nhwc, nchw]" in str(refused.value.__cause__)
    with pytest.raises(UserInputError, match=r"dataset.test_size=1.5 is not a number in \(0, 1\]"):
        check_ranges(compose(["dataset=npz", f"dataset.path={path}", "dataset.test_size=1.5"]))


@pytest.mark.parametrize("source", ["digits", "npz_stratified", "npz_too_few_per_class"])
def test_a_cached_split_selects_what_scikit_learn_splitting_the_arrays_selects(tmp_path, source):
    """The split is drawn on sample indices and cached as plain arrays (data/split_cache.py):
    the first load and a load from the cache give scikit-learn's own split of the samples."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from precision_sweep.data import load_dataset

    if source == "digits":
        cfg = compose(["dataset.test_size=0.3", "dataset.seed=3"]).dataset
        bunch = load_digits()
        x, y = bunch.images.astype(np.float32)[..., None], bunch.target
        stratify = y
    else:
        n_classes = 4 if source == "npz_stratified" else 30  # 30 classes of 40 samples: some have one
        x, y = random_samples(40, (3,), n_classes, seed=5)
        x[:, 0] = np.arange(40)
        counts = np.bincount(y)
        stratify = y if counts[counts > 0].min() >= 2 else None
        cfg = _npz_cfg(write_npz(tmp_path / "d.npz", x, y), "dataset.test_size=0.25", "dataset.seed=3", "dataset.scale=1")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=cfg.test_size, random_state=3, stratify=stratify)
    cache = tmp_path / "cache"
    first = load_dataset(cfg, cache_dir=cache)
    assert list((cache / "datasets" / "splits").glob("*.npy"))
    cached = load_dataset(cfg, cache_dir=cache)
    uncached = load_dataset(cfg)
    for dataset in (first, cached, uncached):
        np.testing.assert_array_equal(dataset.y_test, y_test)
        np.testing.assert_array_equal(dataset.y_train, y_train)
        np.testing.assert_array_equal(dataset.x_test / np.float32(cfg.scale), x_test)
    assert cached.content_hash == first.content_hash == uncached.content_hash
