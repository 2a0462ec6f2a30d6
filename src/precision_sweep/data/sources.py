"""Datasets as users keep them: a Python function (``dataset=python``), TFRecord files
(``dataset=tfrecord``) and an already prepared TFDS folder (``dataset=tfds_folder``).

This module owns reading those sources into one array of samples and one of labels. From there
on they are like an ``.npz`` file: :func:`~precision_sweep.data.datasets.assemble_labelled`
reads the labels as the task's label kind and makes the seeded split, the preprocessing, the
calibration split and the content hash.

The samples are **materialized** in memory (every batch concatenated) before the split; only
image folders are streamed from their files (:mod:`~precision_sweep.data.streamed`). Nothing
is ever downloaded: a TFDS folder must already be prepared.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from precision_sweep.data.datasets import Dataset, InputSpec, assemble_labelled
from precision_sweep.samples import NamedSamples
from precision_sweep.data.validate import config_value, resolve_target, target_kwargs, tfds_builder_dir, tfrecord_files
from precision_sweep.errors import UserInputError

log = logging.getLogger(__name__)


# -- dataset=python ---------------------------------------------------------------------------


def _as_array(value, target: str, what: str) -> np.ndarray:
    if isinstance(value, dict):
        raise UserInputError(
            f"dataset.target={target} yields {what} as a dict ({', '.join(map(str, value))}); a dict names "
            "the inputs of a model with several inputs, and labels are one array. Yield labels as one array "
            "per batch."
        )
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError) as exc:
        raise UserInputError(
            f"dataset.target={target} yields {what} that are not arrays ({type(value).__name__}: {exc}). "
            "Yield numpy arrays or tf tensors."
        ) from exc
    if array.dtype == object:
        raise UserInputError(
            f"dataset.target={target} yields {what} of mixed or ragged values (an object array). Yield "
            "numeric arrays of one shape per batch."
        )
    return array


def _elements(result, target: str) -> Iterable:
    """The elements of what the user's function returned: a tf.data.Dataset's as numpy, or an
    iterable's (not a string, an array or a mapping: those are not datasets)."""
    import tensorflow as tf

    if isinstance(result, tf.data.Dataset):
        return result.as_numpy_iterator()
    if isinstance(result, (str, bytes, np.ndarray, dict)) or not hasattr(result, "__iter__"):
        raise UserInputError(
            f"dataset.target={target} returned a {type(result).__name__}, not a dataset. It must return a "
            "tf.data.Dataset or an iterable (a list, a generator) of (inputs, labels) pairs, each a batch: "
            "inputs of shape (batch, *sample) and labels of shape (batch, ...). For arrays x, y already in "
            "memory return [(x, y)], or use dataset=npz."
        )
    return result


def _batches(elements: Iterable, target: str, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(inputs, labels)`` element concatenated into one array each.

    An element is a batch (inputs ``(B, *sample)``, labels ``(B, ...)``), or a single sample
    without the batch dimension where that can be told for sure: the model's input shape is
    known and the inputs have exactly its rank. Every element must be of the same kind.
    """
    xs, ys, single = [], [], None
    for index, element in enumerate(elements):
        if not isinstance(element, (tuple, list)) or len(element) != 2:
            raise UserInputError(
                f"dataset.target={target} yields a {type(element).__name__} as element {index}, not an "
                "(inputs, labels) pair. Yield (or map the tf.data.Dataset to) 2-tuples: "
                "dataset.map(lambda d: (d['image'], d['label']))."
            )
        y = _as_array(element[1], target, "labels")
        if spec.inputs or isinstance(element[0], dict):  # several inputs, by name
            batch = _named_batch(element[0], target, spec, index)
            if y.ndim == 0 or len(y) != len(next(iter(batch.values()))):
                raise UserInputError(
                    f"dataset.target={target} yields labels of shape {y.shape} with inputs of "
                    f"{len(next(iter(batch.values())))} samples in element {index}: one label per sample."
                )
            xs.append(batch)
            ys.append(y)
            continue
        x = _as_array(element[0], target, "inputs")
        is_single = spec.shape is not None and x.ndim == len(spec.shape)
        if single is None:
            single = is_single
        elif single != is_single:
            raise UserInputError(
                f"dataset.target={target} mixes batches and single samples (element {index} has inputs of "
                f"shape {x.shape}). Yield every element as a batch (batch dimension first)."
            )
        if single:
            x, y = x[None], y[None]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise UserInputError(
                f"dataset.target={target} yields inputs of shape {x.shape} with labels of shape {y.shape} in "
                f"element {index}: a batch needs the same first (batch) dimension in both, e.g. inputs "
                "(32, 28, 28, 1) and labels (32,). Batch a tf.data.Dataset with .batch(n)."
            )
        xs.append(x)
        ys.append(y)
    if not xs:
        raise UserInputError(f"dataset.target={target} yields no samples. Return a dataset that holds some.")
    if isinstance(xs[0], dict):
        return NamedSamples({name: _concatenate([x[name] for x in xs], target, f"inputs {name!r}") for name in xs[0]}), \
            _concatenate(ys, target, "labels")
    return _concatenate(xs, target, "inputs"), _concatenate(ys, target, "labels")


def _named_batch(inputs, target: str, spec: InputSpec, index: int) -> dict[str, np.ndarray]:
    """One element's inputs of a model with several inputs: a batch of each, by input name."""
    names = [name for name, _, _ in spec.inputs]
    if not isinstance(inputs, dict) or (names and sorted(map(str, inputs)) != sorted(names)):
        have = ", ".join(map(str, inputs)) if isinstance(inputs, dict) else f"a {type(inputs).__name__}"
        raise UserInputError(
            f"dataset.target={target} yields {have} as the inputs of element {index}; the model takes "
            f"{', '.join(names) or 'one input'}. Yield ({{{', '.join(f'{n!r}: batch' for n in names)}}}, labels), "
            "one batch per input named as the input."
        )
    batch = {str(name): _as_array(value, target, f"inputs {name!r}") for name, value in inputs.items()}
    lengths = {len(array) if array.ndim else 0 for array in batch.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise UserInputError(
            f"dataset.target={target} yields inputs of different batch sizes in element {index} "
            f"({', '.join(f'{n} {a.shape}' for n, a in batch.items())}). Yield one batch of each input, "
            "batch dimension first."
        )
    return batch


def _concatenate(parts: list[np.ndarray], where: str, what: str) -> np.ndarray:
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise UserInputError(
            f"{where} holds {what} of different per-sample shapes ({', '.join(map(str, sorted(shapes)))}). "
            "Every sample must have one shape: resize or pad them in your pipeline."
        )
    return np.concatenate(parts)


def _python(cfg, spec: InputSpec, cache_dir: Path | None, labels: str = "classes") -> Dataset:
    function = resolve_target(cfg)
    target = str(cfg.target)
    x, y = _batches(_elements(function(**target_kwargs(cfg)), target), target, spec)
    return assemble_labelled(cfg, x, y, None, spec, cache_dir, labels, f"the batches of dataset.target={target}",
                             {"dataset_target": target})


# -- dataset=tfrecord -------------------------------------------------------------------------

_KINDS = {"float32": "float_list", "int64": "int64_list", "string": "bytes_list"}


def _feature_specs(cfg) -> tuple[str, dict, str, dict]:
    """(x name, x spec, y name, y spec) of ``dataset.features``: exactly one of each role."""
    features = config_value(cfg, "features")
    example = ("dataset.features: {image: {dtype: string, encoding: png, shape: [28, 28, 1], role: x}, "
               "label: {dtype: int64, shape: [], role: y}} (see conf/dataset/tfrecord.yaml)")
    if not features:
        raise UserInputError(f"dataset=tfrecord needs dataset.features, the features of a record, e.g. {example}.")
    roles: dict[str, list[str]] = {"x": [], "y": []}
    for name, feature in features.items():
        roles[str(feature.role)].append(str(name))
        if any(int(d) < 1 for d in feature.shape):
            raise UserInputError(f"dataset.features.{name}.shape={list(feature.shape)} must hold sizes of at least 1.")
        if str(feature.dtype) != "string" and str(feature.encoding) != "raw":
            raise UserInputError(
                f"dataset.features.{name} has encoding {feature.encoding} but dtype {feature.dtype}: images are "
                "stored as bytes. Set dtype: string, or encoding: raw."
            )
    if len(roles["x"]) != 1 or len(roles["y"]) != 1:
        raise UserInputError(
            f"dataset.features needs exactly one feature with role x and one with role y (it has x: "
            f"{roles['x'] or 'none'}, y: {roles['y'] or 'none'}); several inputs are not supported yet. "
            f"E.g. {example}."
        )
    if str(features[roles["y"][0]].dtype) == "string":
        raise UserInputError(
            f"dataset.features.{roles['y'][0]} (role y) is a string; labels must be int64 (classes, ids) or "
            "float32 (values). Store the class index, not the class name."
        )
    return roles["x"][0], features[roles["x"][0]], roles["y"][0], features[roles["y"][0]]


def _present_features(files: list[Path]) -> dict[str, str]:
    """The features of the first record, name -> kind (float_list, int64_list, bytes_list)."""
    import tensorflow as tf

    try:
        for raw in tf.data.TFRecordDataset([str(f) for f in files]).take(1):
            example = tf.train.Example.FromString(raw.numpy())
            return {name: feature.WhichOneof("kind") for name, feature in example.features.feature.items()}
    except Exception as exc:  # noqa: BLE001  (tf's DataLossError, protobuf's DecodeError)
        raise _unreadable(files, exc) from exc
    raise UserInputError(f"The TFRecord files of dataset.path ({files[0]} ...) hold no records.")


def _unreadable(files: list[Path], exc: Exception) -> UserInputError:
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UserInputError(
        f"The records of dataset.path ({', '.join(map(str, files[:3]))}{' ...' if len(files) > 3 else ''}) do not "
        f"parse as tf.train.Example records with dataset.features ({type(exc).__name__}: {message}). Write "
        "uncompressed TFRecord files of tf.train.Example protos (tf.io.TFRecordWriter(path).write("
        "example.SerializeToString())) and give each feature's dtype and per-sample shape as stored."
    )


def _parser(name: str, feature) -> tuple[Any, Callable]:
    """(the tf.io feature to parse ``name`` with, the function decoding its parsed value)."""
    import tensorflow as tf

    shape = [int(d) for d in feature.shape]
    if str(feature.dtype) != "string":
        return tf.io.FixedLenFeature(shape, getattr(tf, str(feature.dtype))), lambda v: v
    if str(feature.encoding) == "raw":
        return tf.io.FixedLenFeature([], tf.string), lambda v: tf.reshape(tf.io.decode_raw(v, tf.uint8), shape)

    def image(value):
        channels = shape[-1] if len(shape) == 3 else 0
        decoded = tf.io.decode_image(value, channels=channels, expand_animations=False)
        return tf.ensure_shape(decoded, shape or None)

    return tf.io.FixedLenFeature([], tf.string), image


def _tfrecord(cfg, spec: InputSpec, cache_dir: Path | None, labels: str = "classes") -> Dataset:
    import tensorflow as tf

    files = tfrecord_files(cfg)
    x_name, x_spec, y_name, y_spec = _feature_specs(cfg)
    present = _present_features(files)
    for name, feature in ((x_name, x_spec), (y_name, y_spec)):
        have = ", ".join(f"{n} ({k})" for n, k in sorted(present.items())) or "none"
        if name not in present:
            raise UserInputError(
                f"dataset.features names the feature {name!r} (role {feature.role}), but the records of "
                f"dataset.path={cfg.path} have no such feature; they have: {have}. Rename it in dataset.features "
                f"to the record's feature name (e.g. dataset.features.<name>.role={feature.role}), or write the "
                "records with that feature."
            )
        if present[name] != _KINDS[str(feature.dtype)]:
            raise UserInputError(
                f"dataset.features.{name}.dtype={feature.dtype} reads a {_KINDS[str(feature.dtype)]}, but the "
                f"records store {name!r} as a {present[name]} (they have: {have}). Set its dtype to "
                f"{ {v: k for k, v in _KINDS.items()}[present[name]] }."
            )
    (x_parse, x_decode), (y_parse, y_decode) = _parser(x_name, x_spec), _parser(y_name, y_spec)

    def parse(record):
        parsed = tf.io.parse_single_example(record, {x_name: x_parse, y_name: y_parse})
        return x_decode(parsed[x_name]), y_decode(parsed[y_name])

    records = tf.data.TFRecordDataset([str(f) for f in files]).map(parse).batch(256)
    xs, ys = [], []
    try:
        for x, y in records.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
    except (tf.errors.OpError, ValueError) as exc:
        raise _unreadable(files, exc) from exc
    where = f"dataset.path={cfg.path}"
    return assemble_labelled(cfg, np.concatenate(xs), np.concatenate(ys), None, spec, cache_dir, labels, where,
                             {"dataset_tfrecord_files": len(files)})


# -- dataset=tfds_folder ----------------------------------------------------------------------


def _tfds_folder(cfg, spec: InputSpec, cache_dir: Path | None, labels: str = "classes") -> Dataset:
    folder = tfds_builder_dir(cfg)
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise UserInputError(
            "dataset=tfds_folder reads TFDS folders with the tensorflow-datasets package, which is not "
            "installed. Install it with pip install 'precision-sweep[tfds]'."
        ) from exc
    try:
        builder = tfds.builder_from_directory(str(folder))
    except Exception as exc:  # noqa: BLE001  (tfds raises many kinds for a broken folder)
        raise UserInputError(
            f"{folder} cannot be read as a prepared TFDS dataset ({type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]}). Copy the whole folder the dataset was prepared "
            "into (dataset_info.json, features.json and the record files), unchanged."
        ) from exc
    splits = sorted(builder.info.splits.keys())
    split = str(cfg.split)
    if split.split("[")[0] not in splits:
        raise UserInputError(
            f"dataset.split={split} is not a split of {folder} (it has: {', '.join(splits)}). Set "
            f"dataset.split to one of them, e.g. dataset.split={splits[0] if splits else 'test'}."
        )
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise UserInputError(
            f"The TFDS dataset in {folder} declares no (input, label) supervised keys ({keys!r}), so "
            "precision-sweep cannot tell its samples from its labels. Use dataset=python with a function "
            "that maps its records to (inputs, labels) batches."
        )
    try:
        batches = list(builder.as_dataset(split=split, as_supervised=True, batch_size=256).as_numpy_iterator())
    except Exception as exc:  # noqa: BLE001
        raise UserInputError(
            f"The records of {folder} (split {split}) cannot be read ({type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]}). Copy the whole prepared folder again."
        ) from exc
    if not batches:
        raise UserInputError(f"Split {split} of {folder} holds no samples. Choose another dataset.split.")
    x = _concatenate([b[0] for b in batches], str(folder), "inputs")
    y = _concatenate([b[1] for b in batches], str(folder), "labels")
    label = builder.info.features[keys[1]]
    names = list(label.names) if getattr(label, "names", None) else None
    return assemble_labelled(cfg, x, y, names, spec, cache_dir, labels, f"{folder} (split {split})",
                             {"dataset_tfds": f"{builder.info.full_name}:{split}"})


LOADERS = {"python": _python, "tfrecord": _tfrecord, "tfds_folder": _tfds_folder}
