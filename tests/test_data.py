"""The embedded default: digits dataset and the digits_cnn model trained at first use."""

from __future__ import annotations

import numpy as np

from sweep_testing import compose


def test_digits_split_is_seeded_and_stratified():
    from precision_sweep.data import load_dataset

    cfg = compose()
    a, b = load_dataset(cfg.dataset), load_dataset(cfg.dataset)
    assert a.content_hash == b.content_hash
    assert a.x_test.shape[1:] == (8, 8, 1) and a.x_test.dtype == np.float32
    assert 0.0 <= a.x_test.min() and a.x_test.max() <= 1.0
    assert len(a.x_test) == 450 and a.n_classes == 10
    train_share = np.bincount(a.y_train) / len(a.y_train)
    test_share = np.bincount(a.y_test) / len(a.y_test)
    assert np.abs(train_share - test_share).max() < 0.01
    other = load_dataset(compose(["dataset.seed=1"]).dataset)
    assert other.content_hash != a.content_hash


def test_digits_cnn_trains_to_095_and_is_cached_by_config(tmp_path):
    import keras

    from precision_sweep.data import load_dataset, load_model
    from precision_sweep.data.models import builtin as model_module

    cfg = compose([f"paths.outputs={tmp_path}"])
    dataset = load_dataset(cfg.dataset)
    loaded = load_model(cfg.model, dataset, cfg.paths.cache)
    accuracy = float(np.mean(loaded.keras_model.predict(dataset.x_test, verbose=0).argmax(1) == dataset.y_test))
    assert accuracy >= 0.95
    cached = list((tmp_path / "cache" / "models").glob("digits_cnn-*.keras"))
    assert len(cached) == 1 and loaded.path == cached[0]
    # A new process would load the file: drop the in-process memo and load again.
    model_module._MEMO.clear()
    again = load_model(cfg.model, dataset, cfg.paths.cache)
    assert again.content_hash == loaded.content_hash
    assert isinstance(again.keras_model, keras.Model)
    # A different training config is a different cache entry.
    model_module._MEMO.clear()
    short = load_model(compose([f"paths.outputs={tmp_path}", "model.epochs=2"]).model, dataset, cfg.paths.cache)
    assert short.content_hash != loaded.content_hash
    assert len(list((tmp_path / "cache" / "models").glob("digits_cnn-*.keras"))) == 2


def test_metrics_against_known_pairs():
    from precision_sweep.metrics import compare

    baseline = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    outputs = np.eye(4, dtype=np.float32)[[0, 1, 3, 3]] * 0.9
    labels = np.array([0, 1, 2, 2])
    m = compare(outputs, baseline, labels)
    assert m["accuracy"] == 0.5 and m["baseline_accuracy"] == 0.75
    assert m["accuracy_delta"] == -0.25
    assert m["agreement"] == 0.75
    assert m["max_abs_diff"] == np.float32(1.0)
    assert m["n_samples"] == 4
