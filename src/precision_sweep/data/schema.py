"""Config schemas of the ``model`` and ``dataset`` groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    # builtin: trained at first use by precision_sweep.data.builtin_models (``builder`` names it);
    # keras: a Keras 3 .keras/.h5 file; saved_model: a SavedModel directory (one signature);
    # tf_keras: a .keras/.h5 file loaded with legacy Keras 2 (package tf_keras).
    source: str = MISSING
    builder: Optional[str] = None
    path: Optional[str] = None
    # SavedModel signature to convert (Keras 3 ``model.export()`` writes "serve" and
    # "serving_default"; coremltools converts exactly one).
    signature: str = "serving_default"
    # The model input: name (null = the model's own), shape without the batch dimension
    # (null = the model's own; needed where the model leaves a dimension open) and dtype
    # (null = the model's own, e.g. float32).
    input_name: Optional[str] = None
    input_shape: Optional[List[int]] = None
    input_dtype: Optional[str] = None
    # The output to evaluate when the model has several: its name or its index (null = the only one).
    output: Optional[str] = None
    # training of builtin models
    epochs: int = 30
    seed: int = 0
    # What the model outputs: "probabilities" (softmax) or "logits".
    outputs_are: str = "probabilities"
    # Largest batch the converted program accepts (its flexible batch dimension's upper bound).
    max_batch: int = 1024
    # false allows deserializing Python code stored in the file (Lambda layers): only for files
    # you trust. The run records it as the param model_safe_mode.
    safe_mode: bool = True


@dataclass
class DatasetConfig:
    name: str = MISSING
    # digits (embedded), npz (arrays x and y), image_folder (one subfolder per class)
    source: str = MISSING
    path: Optional[str] = None
    # Share of the samples evaluated (the test split); the rest is the train split.
    test_size: float = 0.25
    # Calibration samples (for activation quantization), drawn from the train split, never
    # from the test split. A count, capped at the size of the train split.
    calib_size: int = 64
    seed: int = 0
    # At most this many test samples (after the seeded split).
    limit: Optional[int] = None
    # Preprocessing, in this order: color (auto|grayscale|rgb; auto follows the model's
    # channels), channel_order (rgb|bgr), x * scale, (x - mean) / std per channel, then
    # layout (nhwc|nchw; nchw only for models whose input is channels-first).
    color: str = "auto"
    channel_order: str = "rgb"
    scale: float = 1.0
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    layout: str = "nhwc"
    # image_folder: resize images to the model's input size (false: sizes must match).
    resize: bool = True
