"""Preprocessing as a value: the affine map from 8-bit pixels to a model's input.

One type serves every place that speaks of preprocessing: the dataset config (``scale``,
``mean``, ``std``, ``channel_order``), a Core ML ``ImageType`` (``scale``, ``bias``,
``color_layout``, read back from a file or built for a conversion) and a Keras model's own
``Rescaling``/``Normalization`` layers. A value maps a pixel ``p`` of channel ``c`` (in the
model's channel order) to ``p * scale[c] + bias[c]``; comparing two preprocessings is
comparing two values, converting between the config and ``ImageType`` is one constructor.

Core ML's ``ImageType`` has one ``scale`` for every channel and a bias per channel, so a
per-channel ``std`` has no ``ImageType``: :meth:`Preprocessing.image_type_arguments` refuses
it with the reason (the division belongs in the model then, e.g. a ``Normalization`` layer).

:class:`ImageFeed` is what Core ML does to the app's pixels before the program sees them:
channels first, in the input's ``colorSpace`` order (RGB, BGR or grayscale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precision_sweep.data.streamed import StreamedImages
from precision_sweep.errors import UserInputError

COLOR_LAYOUTS = ("RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16")


def _per_channel(values, channels: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return np.broadcast_to(values, (channels,)).copy() if values.size == 1 else values


@dataclass(frozen=True)
class Preprocessing:
    """``model input[c] = pixel[c] * scale[c] + bias[c]``, pixels in ``channel_order``.

    ``scale`` and ``bias`` hold one value per channel (1 for grayscale, 3 for colour);
    ``channel_order`` is ``"rgb"`` or ``"bgr"`` (the order the model was trained on; grayscale
    has none and is ``"rgb"``).
    """

    scale: tuple[float, ...]
    bias: tuple[float, ...]
    channel_order: str = "rgb"

    @property
    def channels(self) -> int:
        return len(self.scale)

    @classmethod
    def of(cls, scale, bias, channels: int, channel_order: str = "rgb") -> "Preprocessing":
        return cls(
            tuple(float(v) for v in _per_channel(scale, channels)),
            tuple(float(v) + 0.0 for v in _per_channel(bias, channels)),  # + 0.0: no -0.0 in the bias
            channel_order if channels == 3 else "rgb",
        )

    @classmethod
    def from_dataset(cls, cfg, channels: int) -> "Preprocessing":
        """The dataset config's ``(pixel * scale - mean) / std`` as one affine map."""
        mean = _per_channel(0.0 if cfg.mean is None else list(cfg.mean), channels)
        std = _per_channel(1.0 if cfg.std is None else list(cfg.std), channels)
        return cls.of(float(cfg.scale) / std, -mean / std, channels, str(cfg.channel_order))

    @classmethod
    def from_image_type(cls, scale: float, bias, color_layout: str) -> "Preprocessing":
        """The preprocessing of a Core ML image input (``ImageType``'s three arguments)."""
        channels = 1 if color_layout.startswith("GRAYSCALE") else 3
        return cls.of(scale, bias, channels, "bgr" if color_layout == "BGR" else "rgb")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The model input of RGB (or grayscale) NHWC ``pixels``: reordered, scaled, biased."""
        x = np.asarray(pixels, dtype=np.float32)
        if self.channel_order == "bgr" and x.shape[-1] == 3:
            x = x[..., ::-1]
        return x * np.asarray(self.scale, np.float32) + np.asarray(self.bias, np.float32)

    def output_range(self) -> tuple[float, float]:
        """The model input's range for pixels 0..255 (over every channel)."""
        low = [min(b, 255 * s + b) for s, b in zip(self.scale, self.bias)]
        high = [max(b, 255 * s + b) for s, b in zip(self.scale, self.bias)]
        return min(low), max(high)

    def close_to(self, other: "Preprocessing", rtol: float = 1e-3) -> bool:
        """Same map within ``rtol`` of the input range (fp16-stored constants compare equal)."""
        if self.channels != other.channels or (self.channels == 3 and self.channel_order != other.channel_order):
            return False
        span = max(abs(v) for v in (*self.output_range(), *other.output_range(), 1e-12))
        scale_ok = np.allclose(np.asarray(self.scale) * 255, np.asarray(other.scale) * 255, rtol=0, atol=rtol * span)
        bias_ok = np.allclose(self.bias, other.bias, rtol=0, atol=rtol * span)
        return bool(scale_ok and bias_ok)

    def color_layout(self, float16_gray: bool = False) -> str:
        if self.channels == 1:
            return "GRAYSCALE_FLOAT16" if float16_gray else "GRAYSCALE"
        return "BGR" if self.channel_order == "bgr" else "RGB"

    def image_type_arguments(self) -> tuple[float, list[float]]:
        """``(scale, bias)`` of the ``ImageType`` that applies this preprocessing.

        Raises :class:`UserInputError` when the channels need different scales (a per-channel
        ``std``): an ``ImageType`` has one scale.
        """
        if not np.allclose(self.scale, self.scale[0], rtol=1e-6, atol=0):
            raise UserInputError(
                f"model.input_type=image cannot express this preprocessing: the channels need different "
                f"scales {[round(s, 6) for s in self.scale]} (a per-channel dataset.std), but a Core ML "
                "ImageType has one scale for every channel and a bias per channel. precision-sweep does "
                "not change your model to fit it. Put the per-channel division into the Keras model (e.g. "
                "a Normalization layer at its input) and give the dataset only dataset.scale and "
                "dataset.mean, or keep model.input_type=tensor."
            )
        return float(self.scale[0]), [float(b) for b in self.bias]

    def image_type_source(self, float16_gray: bool = False) -> str:
        """The ``ct.ImageType(...)`` arguments as code, to paste into a conversion script."""
        scale, bias = self.image_type_arguments()
        return (f"ct.ImageType(scale={_number(scale)}, bias=[{', '.join(_number(b) for b in bias)}], "
                f"color_layout=ct.colorlayout.{self.color_layout(float16_gray)})")

    def describe(self) -> str:
        """Short words for the input range and channel order, e.g. "[-1, 1] BGR"."""
        low, high = self.output_range()
        order = f" {self.channel_order.upper()}" if self.channels == 3 else " grayscale"
        known = {(0.0, 1.0): "[0, 1]", (-1.0, 1.0): "[-1, 1]", (0.0, 255.0): "[0, 255]"}
        for (a, b), words in known.items():
            if abs(low - a) < 1e-3 * max(1, abs(b)) and abs(high - b) < 1e-3 * max(1, abs(b)):
                if np.allclose(self.scale, self.scale[0]):
                    return words + order
        return f"[{low:.4g}, {high:.4g}]{order} (scale {', '.join(f'{s:.4g}' for s in self.scale)})"


def _number(value: float) -> str:
    """A constant as a reader writes it: 1/255 for 0.00392..., else its shortest repr."""
    for denominator in (255.0, 127.5, 128.0, 256.0):
        for numerator in (1.0, 2.0, -1.0):
            if value and abs(value - numerator / denominator) <= 1e-6 * abs(value):
                return f"{numerator:g}/{denominator:g}"
    return repr(round(float(value), 7))


@dataclass(frozen=True)
class ImageFeed:
    """How Core ML feeds an image input: 8-bit pixels, channels first (every program's image
    input is NCHW), in the order of ``color_layout``, the input's colorSpace (``RGB``, ``BGR``,
    ``GRAYSCALE``, ``GRAYSCALE_FLOAT16``)."""

    color_layout: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """The program input for RGB (or grayscale) NHWC ``pixels`` (0..255)."""
        x = np.asarray(pixels, dtype=np.float32)
        if self.color_layout == "BGR" and x.shape[-1] == 3:
            x = x[..., ::-1]
        x = np.transpose(x, (0, 3, 1, 2))
        dtype = np.float16 if self.color_layout == "GRAYSCALE_FLOAT16" else np.float32
        return np.ascontiguousarray(x, dtype=dtype)


def check_pixels(pixels: np.ndarray, where: str) -> None:
    """Refuse samples that are not 8-bit pixels (what an app's image input holds). Images
    streamed from their files are 8-bit by their decoding: only their shape is checked."""
    shape = np.shape(pixels)  # a streamed set's without reading it
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise UserInputError(
            f"model.input_type=image needs images (N, height, width, 1 or 3 channels), but {where} "
            f"holds samples of shape {tuple(shape[1:])}. Use model.input_type=tensor for this model and data."
        )
    if isinstance(pixels, StreamedImages):
        return
    x = np.asarray(pixels)
    if x.size and (x.min() < 0 or x.max() > 255 or not np.all(np.mod(x, 1) == 0)):
        raise UserInputError(
            f"model.input_type=image feeds 8-bit pixels, but {where} holds values from {float(x.min()):.4g} "
            f"to {float(x.max()):.4g}{' that are not whole numbers' if not np.all(np.mod(x, 1) == 0) else ''}. "
            "Store the raw pixels 0..255 (the preprocessing comes from dataset.scale/mean/std), or use "
            "model.input_type=tensor."
        )
