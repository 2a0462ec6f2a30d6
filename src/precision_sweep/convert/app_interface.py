"""The shipped model's interface: an ``ImageType`` input and a ``ClassifierConfig`` output.

Apps convert with ``ct.convert(model, inputs=[ct.ImageType(...)],
classifier_config=ct.ClassifierConfig(labels))``: Vision feeds 8-bit pixels, the app reads
``classLabel``. :class:`AppInterface` is that part of the conversion call, derived from the
config (``model.input_type``, ``model.classifier``) and the dataset (its preprocessing and
class names). The converter adds it to the frontend program before coremltools' pipeline,
which then inserts the image preprocessing (``mul``/``add``) and the ``classify`` op exactly as
``ct.convert`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from precision_sweep.data.preprocessing import Preprocessing
from precision_sweep.errors import UserInputError

# Targets whose image inputs may be GRAYSCALE_FLOAT16 (Core ML 6, iOS16/macOS13 and later).
_FLOAT16_GRAY_FROM = 7


@dataclass(frozen=True)
class AppInterface:
    """What ``ct.convert`` is given beyond the TF model: ``image`` is ``(scale, bias,
    color_layout, channel_first)`` of the ``ImageType`` (None: a ``TensorType``), ``labels``
    the ``ClassifierConfig`` labels (None: no classifier)."""

    image: tuple | None = None
    labels: tuple[str, ...] | None = None

    @property
    def plain(self) -> bool:
        return self.image is None and self.labels is None

    def key(self) -> dict | None:
        """Part of a conversion's cache key (None for the plain tensor interface)."""
        if self.plain:
            return None
        return {"image": list(self.image) if self.image else None, "labels": list(self.labels or []) or None}

    @property
    def io_precision(self) -> str | None:
        """The program input dtype an image input forces ("float16" for GRAYSCALE_FLOAT16,
        else "float32"), or None when the input is a tensor."""
        if self.image is None:
            return None
        return "float16" if self.image[2] == "GRAYSCALE_FLOAT16" else "float32"

    def input_type(self, name: str, shape: tuple, batch):
        """The coremltools input type of ``name`` (shape without batch), batch dimension ``batch``."""
        import coremltools as ct

        if self.image is None:
            return ct.TensorType(name=name, shape=(batch, *shape))
        scale, bias, layout, channel_first = self.image
        return ct.ImageType(name=name, shape=(batch, *shape), scale=scale, bias=list(bias),
                            color_layout=getattr(ct.colorlayout, layout), channel_first=channel_first)

    def classifier_config(self):
        import coremltools as ct

        return None if self.labels is None else ct.ClassifierConfig(list(self.labels))


PLAIN = AppInterface()


def image_channels(input_shape: tuple, layout: str, where: str) -> int:
    """The channel count of an image input, refusing inputs that are not images."""
    shape = tuple(input_shape)
    channels = (shape[0] if layout == "nchw" else shape[-1]) if len(shape) == 3 else None
    if channels not in (1, 3):
        raise UserInputError(
            f"model.input_type=image but the input of {where} has shape {shape} (without the batch "
            "dimension), which is not an image: a Core ML image input is (height, width, 1 or 3 "
            "channels), or (channels, height, width) with dataset.layout=nchw. Use "
            "model.input_type=tensor for this model."
        )
    return int(channels)


def app_interface(model_cfg, dataset_cfg, class_names, n_outputs, input_shape, compute_precision: str,
                  spec_version: int, where: str) -> AppInterface:
    """The interface the config asks for, checked against the model and the data."""
    image = None
    if str(model_cfg.input_type) == "image":
        channels = image_channels(input_shape, str(dataset_cfg.layout), where)
        preprocessing = Preprocessing.from_dataset(dataset_cfg, channels)
        scale, bias = preprocessing.image_type_arguments()
        float16_gray = channels == 1 and compute_precision != "float32" and spec_version >= _FLOAT16_GRAY_FROM
        image = (scale, tuple(bias), preprocessing.color_layout(float16_gray), str(dataset_cfg.layout) == "nchw")
    labels = None
    if model_cfg.classifier:
        labels = tuple(str(c) for c in class_names)
        if n_outputs is not None and len(labels) != n_outputs:
            raise UserInputError(
                f"model.classifier=true needs one class name per model output, but {where} outputs "
                f"{n_outputs} classes and the dataset names {len(labels)} ({', '.join(labels[:8])}). "
                "Give the dataset one class per output (image_folder: one sorted subfolder per "
                "output; npz: a class_names array), or set model.classifier=false."
            )
    return AppInterface(image, labels)


def interface_for(cfg, model, dataset, compute_precision: str | None = None) -> AppInterface:
    """The interface a job's config asks for (``compute_precision``: the program's, default the
    job's recipe's; it decides GRAYSCALE_FLOAT16)."""
    from precision_sweep.convert.recipes import compute_spec
    from precision_sweep.convert.targets import spec_version

    if str(cfg.model.input_type) != "image" and not cfg.model.classifier:
        return PLAIN
    if str(cfg.model.input_type) == "image" and model.inputs:
        raise UserInputError(
            f"model.input_type=image gives a model one image input, but model={cfg.model.name} takes "
            f"{len(model.inputs)} inputs ({', '.join(n for n, _, _ in model.inputs)}). Set model.input_type=tensor: "
            "each input is then fed as the tensor it is."
        )
    return app_interface(
        cfg.model, cfg.dataset, dataset.class_names, model.n_outputs, model.input_shape,
        compute_precision or compute_spec(cfg.precision).precision, spec_version(cfg.target.coremltools_target),
        f"model={cfg.model.name}",
    )


def image_feed(interface: AppInterface):
    """The :class:`~precision_sweep.data.preprocessing.ImageFeed` of an image interface, else None."""
    from precision_sweep.data.preprocessing import ImageFeed

    return None if interface.image is None else ImageFeed(interface.image[2])
