"""dataset=python|tfrecord|tfds_folder (issue 25, datasets as users keep them): real TFRecord
files and a real prepared TFDS folder written here from arrays, a user's function in
``byo_dataset_functions``, loaded through ``load_dataset`` and compared with the arrays they
came from; one real command on TFRecord files; and the bad inputs, one paragraph each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from byo_dataset_functions import arrays
from byo_helpers import image_cnn
from sweep_testing import compose, mlflow_client, run_cli

from precision_sweep.data import InputSpec, load_dataset
from precision_sweep.errors import UserInputError

ALL = ["dataset.test_size=1.0"]  # every sample evaluated, in the seeded permutation's order


def _order(n: int, seed: int = 0) -> np.ndarray:
    """The order test_size=1.0 evaluates the samples in (datasets._split)."""
    return np.random.default_rng(seed).permutation(n)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_records(path: Path, features: list[dict]) -> Path:
    """TFRecord file of tf.train.Example records, each from {name: bytes | float array | int array}."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        value = np.asarray(value).ravel()
        if np.issubdtype(value.dtype, np.integer):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=value.tolist()))
        return tf.train.Feature(float_list=tf.train.FloatList(value=value.tolist()))

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in features:
            example = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in record.items()}))
            writer.write(example.SerializeToString())
    return path


def _images(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), (np.arange(n) % 3).astype(np.int64)


def _image_records(folder: Path, n: int = 30, files: int = 2, x_name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    x, y = _images(n)
    per = -(-n // files)
    for f in range(files):
        part = range(f * per, min(n, (f + 1) * per))
        _write_records(folder / f"val-{f}.tfrecord", [{x_name: _png(x[i]), "label": y[i]} for i in part])
    return x, y


IMAGE_FEATURES = ["dataset.features.image.shape=[8,8,1]"]


def test_tfrecord_png_images_and_class_labels_load_as_written(tmp_path):
    x, y = _image_records(tmp_path / "records")
    cfg = compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'records'}", *IMAGE_FEATURES, *ALL])
    dataset = load_dataset(cfg.dataset)
    order = _order(len(y))
    np.testing.assert_array_equal(dataset.x_test, x[order].astype(np.float32))
    np.testing.assert_array_equal(dataset.y_test, y[order])
    assert dataset.class_names == ["0", "1", "2"]
    assert dataset.run_params["dataset_tfrecord_files"] == 2
    # a glob and a single file name the same records
    glob = load_dataset(compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'records'}/val-*.tfrecord", *IMAGE_FEATURES, *ALL]).dataset)
    assert glob.content_hash == dataset.content_hash
    one = load_dataset(compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'records' / 'val-0.tfrecord'}", *IMAGE_FEATURES, *ALL]).dataset)
    assert len(one.y_test) == 15


def test_tfrecord_float_features_with_values_labels_and_a_cached_split(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.normal(size=(40, 2)).astype(np.float32)
    _write_records(tmp_path / "reg.tfrecord", [{"image": x[i], "label": y[i]} for i in range(40)])
    overrides = ["dataset=tfrecord", f"dataset.path={tmp_path / 'reg.tfrecord'}", "dataset.features.image.dtype=float32",
                 "dataset.features.image.encoding=raw", "dataset.features.image.shape=[6]",
                 "dataset.features.label.dtype=float32", "dataset.features.label.shape=[2]"]
    everything = load_dataset(compose([*overrides, *ALL]).dataset, labels="values")
    order = _order(40)
    np.testing.assert_array_equal(everything.x_test, x[order])
    np.testing.assert_array_equal(everything.y_test, y[order])
    # the seeded split (through the split cache) takes the same rows twice, and each row whole
    split = load_dataset(compose([*overrides, "dataset.test_size=0.5"]).dataset, cache_dir=tmp_path / "cache", labels="values")
    again = load_dataset(compose([*overrides, "dataset.test_size=0.5"]).dataset, cache_dir=tmp_path / "cache", labels="values")
    assert split.content_hash == again.content_hash and len(split.y_test) == 20
    rows = {tuple(r) for r in np.concatenate([x, y], axis=1)}
    assert {tuple(r) for r in np.concatenate([split.x_test, split.y_test], axis=1)} <= rows


def test_tfrecord_raw_uint8_bytes(tmp_path):
    x, y = _images(12)
    _write_records(tmp_path / "raw.tfrecord", [{"image": x[i].tobytes(), "label": y[i]} for i in range(12)])
    cfg = compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'raw.tfrecord'}", "dataset.features.image.encoding=raw",
                   *IMAGE_FEATURES, *ALL])
    dataset = load_dataset(cfg.dataset)
    np.testing.assert_array_equal(dataset.x_test, x[_order(12)].astype(np.float32))


@pytest.mark.parametrize("function", ["tf_batches", "generator_batches"])
def test_python_source_batches(function):
    x, y = arrays()
    cfg = compose(["dataset=python", f"dataset.target=byo_dataset_functions.{function}", "+dataset.kwargs.batch=7", *ALL])
    dataset = load_dataset(cfg.dataset)
    order = _order(len(y))
    np.testing.assert_array_equal(dataset.x_test, x[order])
    np.testing.assert_array_equal(dataset.y_test, y[order])
    assert dataset.run_params["dataset_target"] == f"byo_dataset_functions.{function}"


def test_python_source_single_samples_when_the_model_input_shape_is_known():
    x, y = arrays()
    cfg = compose(["dataset=python", "dataset.target=byo_dataset_functions.single_samples", *ALL])
    dataset = load_dataset(cfg.dataset, InputSpec((6,)))
    np.testing.assert_array_equal(dataset.x_test, x[_order(len(y))])
    with pytest.raises(UserInputError, match="same first"):  # without the shape they read as batches of 6
        load_dataset(cfg.dataset)


def _one_paragraph(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_python_target_that_cannot_be_imported_or_returns_no_dataset():
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=python", "dataset.target=no_such_module.batches"]).dataset)
    assert "dataset.target=no_such_module.batches cannot be loaded" in _one_paragraph(info)
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=python", "dataset.target=byo_dataset_functions.not_a_dataset"]).dataset)
    assert "returned a int, not a dataset" in _one_paragraph(info)
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=python", "dataset.target=byo_dataset_functions.tf_batches",
                              "+dataset.kwargs.size=3"]).dataset)
    assert "cannot be called with dataset.kwargs" in _one_paragraph(info)


def test_tfrecord_bad_records(tmp_path):
    _image_records(tmp_path / "pixels", x_name="pixels")
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'pixels'}", *IMAGE_FEATURES]).dataset)
    message = _one_paragraph(info)
    assert "'image'" in message and "they have: label (int64_list), pixels (bytes_list)" in message
    (tmp_path / "junk.tfrecord").write_bytes(b"not a record file at all" * 10)
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'junk.tfrecord'}", *IMAGE_FEATURES]).dataset)
    assert "do not parse as tf.train.Example records" in _one_paragraph(info)
    _image_records(tmp_path / "records")
    with pytest.raises(UserInputError) as info:  # 8x8 images read as 9x9
        load_dataset(compose(["dataset=tfrecord", f"dataset.path={tmp_path / 'records'}",
                              "dataset.features.image.shape=[9,9,1]"]).dataset)
    assert "do not parse" in _one_paragraph(info)


def test_a_tfds_folder_that_is_not_prepared_is_refused(tmp_path):
    (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=tfds_folder", f"dataset.path={tmp_path / 'tfds'}",
                              "dataset.name_in_tfds=mnist/3.0.1"]).dataset)
    message = _one_paragraph(info)
    assert "is not a prepared TFDS dataset" in message and "never downloads" in message


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A TFDS dataset prepared from arrays by a GeneratorBasedBuilder (nothing fetched)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    x, y = _images(24)

    class TinyPixels(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                     "label": tfds.features.ClassLabel(names=["a", "b", "c"])}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for i in range(len(y)):
                yield i, {"image": x[i], "label": int(y[i])}

    root = tmp_path_factory.mktemp("tfds")
    TinyPixels(data_dir=str(root)).download_and_prepare()
    return root, x, y


def test_tfds_folder_loads_its_split_with_class_names(tfds_dir):
    root, x, y = tfds_dir
    for name in ("tiny_pixels/1.0.0", "tiny_pixels"):  # without a version: the newest
        cfg = compose(["dataset=tfds_folder", f"dataset.path={root}", f"dataset.name_in_tfds={name}", *ALL])
        dataset = load_dataset(cfg.dataset)
        # TFDS shuffles records by key when it writes them: compare as sets of (image, label) rows
        got = sorted(zip(map(bytes, dataset.x_test.astype(np.uint8)), dataset.y_test.tolist()))
        assert got == sorted(zip(map(bytes, x), y.tolist()))
        assert dataset.class_names == ["a", "b", "c"]
    with pytest.raises(UserInputError) as info:
        load_dataset(compose(["dataset=tfds_folder", f"dataset.path={root}", "dataset.name_in_tfds=tiny_pixels",
                              "dataset.split=validation"]).dataset)
    assert "(it has: test)" in _one_paragraph(info)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "cnn.keras"
    image_cnn(shape=(8, 8, 1), classes=3).save(path)
    return path


RUN = ["precision=fp32", "target=ios16", "compute_units=cpu_only", "diagnosis=off", "progress=false",
       "runtime.progress=false", "dataset.scale=0.00392156862745098"]


def test_a_sweep_job_on_tfrecord_files(tmp_path, classifier):
    _image_records(tmp_path / "records", n=60)
    result = run_cli(["precision-sweep", "model=keras", f"model.path={classifier}", "dataset=tfrecord",
                      f"dataset.path={tmp_path / 'records'}", *IMAGE_FEATURES, *RUN], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    jobs = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert [r.info.status for r in jobs] == ["FINISHED"]
    assert jobs[0].data.tags["dataset_n_test"] == "48"


@pytest.mark.parametrize("case", ["missing_feature", "unimportable_target"])
def test_bad_sources_exit_2_with_one_paragraph(tmp_path, classifier, case):
    if case == "missing_feature":
        _image_records(tmp_path / "records", x_name="pixels")
        args, phrase = ["dataset=tfrecord", f"dataset.path={tmp_path / 'records'}", *IMAGE_FEATURES], "have no such feature"
    else:
        args, phrase = ["dataset=python", "dataset.target=no_such_module.batches"], "cannot be loaded as a function"
    result = run_cli(["precision-sweep", "model=keras", f"model.path={classifier}", *args, *RUN], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr[result.stderr.index("precision-sweep: error:"):]
    assert "Traceback" not in message and phrase in " ".join(message.split())
    if (tmp_path / "outputs" / "mlflow.db").exists():
        client = mlflow_client(tmp_path / "outputs")
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        assert not [r for r in runs if r.info.status == "RUNNING"]
