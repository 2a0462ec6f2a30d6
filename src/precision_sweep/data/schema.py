"""Config schemas of the ``model`` and ``dataset`` groups.

Fixed choices are enumerations (a wrong value fails at composition with the list of
choices); numeric fields declare their valid range (:mod:`precision_sweep.config_checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from precision_sweep.config_checks import Range, ranged


class ModelSource(StrEnum):
    builtin = "builtin"
    keras = "keras"
    saved_model = "saved_model"
    tf_keras = "tf_keras"


class OutputsAre(StrEnum):
    probabilities = "probabilities"
    logits = "logits"


class InputType(StrEnum):
    tensor = "tensor"
    image = "image"


class DatasetSource(StrEnum):
    digits = "digits"
    npz = "npz"
    image_folder = "image_folder"
    python = "python"
    tfrecord = "tfrecord"
    tfds_folder = "tfds_folder"


class Color(StrEnum):
    auto = "auto"
    grayscale = "grayscale"
    rgb = "rgb"


class ChannelOrder(StrEnum):
    rgb = "rgb"
    bgr = "bgr"


class Layout(StrEnum):
    nhwc = "nhwc"
    nchw = "nchw"


class CropAndScale(StrEnum):
    """How an image of another size is fitted to the model input: Vision's ``VNImageCropAndScaleOption``."""

    center_crop = "center_crop"
    scale_fit = "scale_fit"
    scale_fill = "scale_fill"


class FeatureDtype(StrEnum):
    float32 = "float32"
    int64 = "int64"
    string = "string"


class FeatureRole(StrEnum):
    x = "x"
    y = "y"


class FeatureEncoding(StrEnum):
    """How a ``string`` feature holds its sample: raw uint8 bytes, or an encoded image."""

    raw = "raw"
    png = "png"
    jpeg = "jpeg"


@dataclass
class TFRecordFeature:
    """One feature of a ``dataset=tfrecord`` record (``dataset.features.<name>``)."""

    # float32 (float_list), int64 (int64_list) or string (bytes_list: raw bytes or an image).
    dtype: FeatureDtype = FeatureDtype.float32
    # The per-sample shape ([] for a scalar label); an image's [height, width, channels].
    shape: List[int] = field(default_factory=list)
    # x: the model input; y: the label.
    role: FeatureRole = FeatureRole.x
    # string features: raw (uint8 bytes reshaped to shape), png or jpeg (decoded to shape).
    encoding: FeatureEncoding = FeatureEncoding.raw


@dataclass
class ModelConfig:
    name: str = MISSING
    # builtin: trained at first use by precision_sweep.data.builtin_models (``builder`` names it);
    # keras: a Keras 3 .keras/.h5 file; saved_model: a SavedModel directory (one signature);
    # tf_keras: a .keras/.h5 file loaded with legacy Keras 2 (package tf_keras).
    source: ModelSource = MISSING
    builder: Optional[str] = None
    path: Optional[str] = None
    # SavedModel signature to convert (Keras 3 ``model.export()`` writes "serve" and
    # "serving_default"; coremltools converts exactly one).
    signature: str = "serving_default"
    # The model input: name (null = the model's own), shape without the batch dimension
    # (null = the model's own; needed where the model leaves a dimension open) and dtype
    # (null = the model's own, e.g. float32).
    input_name: Optional[str] = None
    input_shape: Optional[List[int]] = ranged(None, Range(low=1, whole=True, null="takes the model's own shape"))
    input_dtype: Optional[str] = None
    # The output to evaluate when the model has several: its name or its index (null = the only one).
    output: Optional[str] = None
    # training of builtin models
    epochs: int = ranged(30, Range(low=0, whole=True))
    seed: int = ranged(0, Range(low=0, high=2**32 - 1, whole=True))
    # What the model outputs: "probabilities" (softmax) or "logits".
    outputs_are: OutputsAre = OutputsAre.probabilities
    # Largest batch the converted program accepts (its flexible batch dimension's upper bound).
    max_batch: int = ranged(1024, Range(low=1, whole=True))
    # false allows deserializing Python code stored in the file (Lambda layers): only for files
    # you trust. The run records it as the param model_safe_mode.
    safe_mode: bool = True
    # Modules imported before a Keras file loads: where its custom layers and functions are
    # registered (@keras.saving.register_keras_serializable), e.g. model.imports=[my_layers]. They
    # must be importable in the job's environment (installed, or on PYTHONPATH).
    imports: List[str] = field(default_factory=list)
    # What the converted model takes and gives, as an app ships it. tensor: float arrays,
    # preprocessed by the dataset config. image: a Core ML ImageType fed 8-bit pixels, whose
    # scale, bias and color layout come from the dataset's scale, mean, std and channel order.
    input_type: InputType = InputType.tensor
    # true: convert with ct.ClassifierConfig(the dataset's class names); accuracy is read from
    # the classLabel output (what an app reads), agreement and differences from the probabilities.
    classifier: bool = False
    # A Core ML file (.mlpackage) made outside precision-sweep: evaluated instead of a conversion
    # (precision and target then come from the file). See precision-compare.
    coreml_file: Optional[str] = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    # digits (embedded), npz (arrays x and y), image_folder (one subfolder per class),
    # python (a user function), tfrecord (TFRecord files), tfds_folder (a prepared TFDS dir)
    source: DatasetSource = MISSING
    path: Optional[str] = None
    # python: the dotted path of a function returning a tf.data.Dataset or an iterable of
    # (inputs, labels) batches, called with kwargs.
    target: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # tfrecord: the features of a record, by name (one with role x, one with role y).
    features: Optional[Dict[str, TFRecordFeature]] = None
    # tfds_folder: the dataset under dataset.path (name/version, e.g. mnist/3.0.1) and its split.
    name_in_tfds: Optional[str] = None
    split: str = "test"
    # Share of the samples evaluated (the test split); the rest is the train split.
    test_size: float = ranged(0.25, Range(low=0, high=1, low_open=True, hint="It is the share of the samples evaluated, e.g. dataset.test_size=0.25 (1 evaluates every sample)."))
    # Calibration samples (for activation quantization), drawn from the train split, never
    # from the test split. A count, capped at the size of the train split.
    calib_size: int = ranged(64, Range(low=0, whole=True))
    seed: int = ranged(0, Range(low=0, high=2**32 - 1, whole=True))
    # Each image also shifted by up to this many pixels along each axis (zero-filled), in each
    # split after the split (no image is in both): (2 * shifts + 1)^2 samples per image. A
    # larger test split from a small image set (dataset=digits_shifted).
    shifts: int = ranged(0, Range(low=0, high=3, whole=True))
    # At most this many test samples (after the seeded split).
    limit: Optional[int] = ranged(None, Range(low=1, whole=True, null="evaluates every test sample"))
    # Preprocessing, in this order: color (auto|grayscale|rgb; auto follows the model's
    # channels), channel_order (rgb|bgr), x * scale, (x - mean) / std per channel, then
    # layout (nhwc|nchw; nchw only for models whose input is channels-first).
    color: Color = Color.auto
    channel_order: ChannelOrder = ChannelOrder.rgb
    scale: float = ranged(1.0, Range(low=0, low_open=True))
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    layout: Layout = Layout.nhwc
    # image_folder: resize images to the model's input size (false: sizes must match).
    resize: bool = True
    # image_folder: how resize fits an image of another size, as an app's Vision request does:
    # scale_fill (stretch), center_crop (keep the aspect ratio, crop the long side's centre) or
    # scale_fit (keep the aspect ratio, pad with black). npz and digits hold arrays already at the
    # model's size: the option does not apply to them.
    crop_and_scale: CropAndScale = CropAndScale.scale_fill
    # image_folder: read the images from their files a batch at a time (memory flat in their
    # number) instead of decoding them all first: true, false, or null (when their decoded
    # pixels would pass 1 GiB).
    stream: Optional[bool] = None
