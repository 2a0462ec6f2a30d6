"""The job's inputs: the model and the dataset, loaded in the order they depend on each other.

A builtin model trains on the dataset, so the dataset loads first; a user's model fixes the
input (size, channels, layout, dtype) the dataset is preprocessed for, so it loads first. Then
the two are checked against each other: sample shape against the model input, labels against
the model's output classes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from precision_sweep.data.datasets import Dataset, InputSpec
from precision_sweep.data.loading import load_dataset
from precision_sweep.data.models import LoadedModel, load_model, predict_probabilities
from precision_sweep.data.models.card import write_json_atomic
from precision_sweep.data.validate import validate_sources
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays
from precision_sweep.samples import NamedSamples, hash_parts

log = logging.getLogger(__name__)


def check_compatible(dataset: Dataset, model: LoadedModel, dataset_cfg=None, class_labels: bool = True) -> None:
    """Refuse a dataset whose samples or labels cannot fit the model, saying how to fix it
    (labels against the output classes only where they are ``class_labels``; a task's own
    labels are checked against the outputs by the task)."""
    if model.inputs and not isinstance(dataset.x_test, NamedSamples):
        names = ", ".join(name for name, _, _ in model.inputs)
        raise UserInputError(
            f"model={model.name} takes {len(model.inputs)} inputs ({names}) but dataset={dataset.name} gives one "
            "array per sample. Give one array per input, named as the input: dataset=npz with "
            f"np.savez(path, {', '.join(f'{n}=...' for n, _, _ in model.inputs)}, y=labels), or dataset=python "
            "yielding ({input name: batch}, labels)."
        )
    if isinstance(dataset.x_test, NamedSamples):
        _check_named_inputs(dataset, model)
    elif tuple(dataset.x_test.shape[1:]) != tuple(model.input_shape):
        sample = tuple(dataset.x_test.shape[1:])
        layout_hint = ""
        if len(sample) == 3 and sorted(sample) == sorted(model.input_shape):
            layout_hint = " The same sizes in another order: set dataset.layout=nchw (or nhwc)."
        raise UserInputError(
            f"The samples of dataset={dataset.name} have shape {sample} but the input "
            f"{model.input_name!r} of model={model.name} takes {tuple(model.input_shape)} (without the "
            f"batch dimension).{layout_hint} Store samples of the model's input shape (npz), use "
            "dataset=image_folder (it resizes images and converts channels), or set model.input_shape "
            "if the model accepts several sizes."
        )
    if not class_labels:
        return
    n = model.n_outputs
    if n is None:
        raise UserInputError(
            f"Output {model.output_name!r} of model={model.name} is not (batch, classes), and task=classification "
            "reads class scores. Select another output with model.output, or choose the task the output is for: "
            "task=regression (values), task=segmentation (per-pixel class scores) or task=embedding."
        )
    labels = np.concatenate([dataset.y_test, dataset.y_train])
    if n is not None and labels.size and (labels.min() < 0 or labels.max() >= n):
        bad = labels[(labels < 0) | (labels >= n)]
        classes = f" ({dataset.n_classes} classes: {', '.join(dataset.class_names[:12])})" if dataset.class_names else ""
        raise UserInputError(
            f"dataset={dataset.name} has labels outside the model's output classes: model={model.name} "
            f"outputs {n} classes (labels 0..{n - 1}), but the data holds label(s) "
            f"{', '.join(map(str, np.unique(bad)[:8]))}{classes}. Use labels 0..{n - 1} in the order of "
            "the model's outputs (image_folder: one sorted class folder per model output)."
        )
    if dataset.n_classes and n is not None and dataset.n_classes > n:
        raise UserInputError(
            f"dataset={dataset.name} has {dataset.n_classes} classes ({', '.join(dataset.class_names[:12])}) "
            f"but model={model.name} outputs {n}. Keep one class folder per model output."
        )


def _check_named_inputs(dataset: Dataset, model: LoadedModel) -> None:
    """Each input's samples against the model's input of that name (shape without the batch)."""
    for name, shape, _ in model.input_specs:
        have = tuple(dataset.x_test.arrays[name].shape[1:])
        if have != tuple(shape):
            raise UserInputError(
                f"The samples of input {name!r} in dataset={dataset.name} have shape {have} but model={model.name} "
                f"takes {tuple(shape)} there (without the batch dimension). Store each input's array in the "
                "shape of its model input."
            )


def _probe(model: LoadedModel, x: np.ndarray, cache_dir: Path | None) -> tuple[bool, float, float]:
    """(any negative output, smallest row sum, largest row sum) of the model on ``x``.

    Stored under ``<cache>/models/probes/`` by model and samples, so that a model read from its
    card is not loaded only for this check.
    """
    record = None
    if cache_dir is not None:
        record = Path(cache_dir) / "models" / "probes" / f"{model.content_hash}-{hash_arrays(hash_parts(x))}.json"
        try:
            negative, low, high = json.loads(record.read_text())
            return bool(negative), float(low), float(high)
        except (OSError, ValueError, TypeError):
            pass
    probe = predict_probabilities(model, x)
    sums = probe.sum(axis=-1)
    result = (bool((probe < -1e-6).any()), float(sums.min()), float(sums.max()))
    if record is not None:
        write_json_atomic(record, list(result))
    return result


def _warn_if_not_probabilities(model: LoadedModel, x: np.ndarray, cache_dir: Path | None = None) -> None:
    if model.outputs_are != "probabilities":
        return
    negative, low, high = _probe(model, x[:8], cache_dir)
    if negative or not (abs(low - 1.0) <= 1e-3 + 1e-5 and abs(high - 1.0) <= 1e-3 + 1e-5):
        log.warning(
            "model %s: outputs do not look like probabilities (rows sum to %.3g..%.3g); if they are "
            "logits set model.outputs_are=logits (agreement and top-k are the same either way)",
            model.name, low, high,
        )


def load_inputs(model_cfg, dataset_cfg, cache_dir: str | Path, labels: str = "classes") -> tuple[Dataset, LoadedModel]:
    """Load and cross-check the dataset and the model of a job; ``labels`` is the task's label
    kind (classes index the model's outputs, which are then checked as class scores)."""
    from types import SimpleNamespace

    validate_sources(SimpleNamespace(model=model_cfg, dataset=dataset_cfg))
    if model_cfg.source == "builtin":
        dataset = load_dataset(dataset_cfg, cache_dir=cache_dir, labels=labels)
        model = load_model(model_cfg, dataset, cache_dir)
    else:
        model = load_model(model_cfg, None, cache_dir)
        dataset = load_dataset(dataset_cfg, InputSpec(tuple(model.input_shape), model.input_dtype, model.inputs), cache_dir, labels)
    check_compatible(dataset, model, class_labels=str(labels) == "classes")
    if str(labels) == "classes":
        _warn_if_not_probabilities(model, dataset.x_test, cache_dir)
    return dataset, model
