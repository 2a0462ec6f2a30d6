"""A Core ML file of the user's in place of a conversion (``model.coreml_file``).

The user's real question is "is *my* file right?". The file is read, checked against the TF
model and the data (input name, image size or tensor shape, classifier labels against the
dataset's classes) before anything runs, and handed to the job like a converted variant: the
job then evaluates it on the data against the TF baseline, as it does every variant. The
file's deployment target is read back from its spec version; its own preprocessing (an image
input's colour layout, and the ``mul``/``add`` ops after it) and classifier labels come from
the file, never from the config.

ML programs (``.mlpackage``) and NeuralNetwork models (``.mlmodel``, read by the emulator's
second loader) are executed; other model types (pipelines, tree ensembles) are refused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from precision_sweep.convert.converter import ConvertedModel, package_size, weights_size
from precision_sweep.convert.targets import effective_target_name, package_spec_version
from precision_sweep.data.preprocessing import ImageFeed, check_pixels
from precision_sweep.data.validate import check_coreml_file
from precision_sweep.emulator.nn_program import KNOWN_SPEC_VERSIONS, NN_TYPES
from precision_sweep.errors import UserInputError


@dataclass(frozen=True)
class FileInterface:
    """What the file takes and gives: its input (name, image colour layout and size, or tensor
    shape) and, for a classifier, its labels."""

    input_name: str
    color_layout: str | None  # an image input's colorSpace, None for a tensor (multiArray) input
    image_size: tuple[int, int] | None  # (height, width) of an image input
    input_shape: tuple | None  # a tensor input's shape
    labels: tuple[str, ...] | None


def read_interface(path: Path) -> FileInterface:
    """The file's input and classifier labels, from its spec and program (loading the program
    reads every weight: a truncated package fails here)."""
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad file
        raise UserInputError(
            f"Cannot read the Core ML package {path} ({type(exc).__name__}: {exc}). It is corrupt or incomplete: "
            "save it again with mlmodel.save(...) and copy the whole .mlpackage folder."
        ) from exc
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram" and kind not in NN_TYPES:
        raise UserInputError(
            f"{path} holds a {kind} model (a pipeline, tree ensemble or other model type); precision-sweep "
            "evaluates ML programs and NeuralNetwork models. Save the neural network inside it as its own "
            "model and compare that."
        )
    if kind in NN_TYPES and spec.specificationVersion not in KNOWN_SPEC_VERSIONS:
        raise UserInputError(
            f"{path} is a NeuralNetwork of specification version {spec.specificationVersion}, newer than the "
            f"emulator knows ({KNOWN_SPEC_VERSIONS.start}..{KNOWN_SPEC_VERSIONS.stop - 1}). Convert it for an "
            "older target, or as an ML program (iOS15 or later)."
        )
    inputs = list(spec.description.input)
    if len(inputs) != 1:
        raise UserInputError(
            f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); precision-compare "
            "evaluates single-input models."
        )
    feature = inputs[0]
    color_layout = image_size = input_shape = None
    if feature.type.WhichOneof("Type") == "imageType":
        image = feature.type.imageType
        color_layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        image_size = (int(image.height), int(image.width))
    else:
        input_shape = tuple(int(d) for d in feature.type.multiArrayType.shape)
    classifier = _load_program(path).classifier()
    labels = None if classifier is None else tuple(str(c) for c in classifier[2])
    return FileInterface(feature.name, color_layout, image_size, input_shape, labels)


def _load_program(path: Path):
    """The file's program in the emulator (every weight read: a truncated package fails here)."""
    from precision_sweep.emulator import Execution, UnsupportedOpError
    from precision_sweep.emulator.nn_program import UnsupportedLayerError

    try:
        return Execution("cpu_only").emulator(path)
    except (UnsupportedOpError, UnsupportedLayerError) as exc:
        raise UserInputError(f"{path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to load is a broken file
        raise UserInputError(
            f"Cannot load the program of {path} ({type(exc).__name__}: {exc}). The package is corrupt or "
            "truncated (e.g. missing or cut weight files under Data/com.apple.CoreML/weights): save it again "
            "with mlmodel.save(...) and copy the whole .mlpackage folder."
        ) from exc


def check_against(interface: FileInterface, path: Path, model, dataset, where: str) -> None:
    """Refuse a file whose input or labels do not fit the TF model and the data."""
    if interface.input_name != model.input_name:
        raise UserInputError(
            f"The input of {path} is named {interface.input_name!r} but the TF model's input ({where}) is "
            f"{model.input_name!r}; inputs are matched by name. Convert with inputs=[ct.ImageType(name="
            f"{model.input_name!r}, ...)] (or ct.TensorType), or check that the file is this model's."
        )
    if interface.color_layout is not None:
        if dataset.pixels_test is None:
            raise UserInputError(
                f"{path} takes an image, but dataset={dataset.name} holds samples of shape "
                f"{dataset.x_test.shape[1:]}, not images. Give an image folder or an .npz of images (N, H, W, C)."
            )
        check_pixels(dataset.pixels_test, f"dataset={dataset.name}")
        height, width, channels = dataset.pixels_test.shape[1:]
        file_channels = 1 if interface.color_layout.startswith("GRAYSCALE") else 3
        if (height, width) != interface.image_size or channels != file_channels:
            raise UserInputError(
                f"{path} takes {interface.image_size[0]}x{interface.image_size[1]} {interface.color_layout} images "
                f"but dataset={dataset.name} gives {height}x{width} images with {channels} channel(s) for {where}. "
                "The file does not fit this model and data: check that it is this model's conversion."
            )
    elif interface.input_shape and tuple(interface.input_shape[1:]) != tuple(dataset.x_test.shape[1:]):
        raise UserInputError(
            f"{path} takes tensors of shape {interface.input_shape} but the samples of dataset={dataset.name} "
            f"have shape {dataset.x_test.shape[1:]} (without the batch). The file does not fit the data: "
            "check that it is this model's conversion and the dataset's layout (dataset.layout)."
        )
    if interface.labels is not None:
        names = [str(c) for c in dataset.class_names]
        if list(interface.labels) != names:
            if len(interface.labels) != len(names):
                what = f"{len(interface.labels)} labels but the dataset has {len(names)} classes"
            else:
                wrong = [f"{a!r} vs {b!r}" for a, b in zip(interface.labels, names) if a != b][:4]
                what = f"labels that differ from the dataset's classes ({', '.join(wrong)})"
            raise UserInputError(
                f"The classifier {path} has {what} ({', '.join(names[:8])}{' ...' if len(names) > 8 else ''}). "
                "classLabel is compared with the dataset's class names in order: convert with "
                "ct.ClassifierConfig(<the class names in the order of the model's outputs>), or give the "
                "dataset those class names (image_folder: sorted subfolder names; npz: a class_names array)."
            )


def use_file(cfg, run, model, dataset, job_dir: Path) -> ConvertedModel:
    """The user's file as the job's variant: checked, copied into the job folder, its params
    logged (``precision=file``, its effective target, its image input)."""
    path = check_coreml_file(cfg.model.coreml_file)
    interface = read_interface(path)
    where = f"model={cfg.model.name}"
    check_against(interface, path, model, dataset, where)
    dataset.feed = ImageFeed(interface.color_layout) if interface.color_layout else None
    copy = Path(job_dir) / path.name
    if copy.is_dir():
        shutil.rmtree(copy)
    if path.is_dir():
        shutil.copytree(path, copy)
    else:
        shutil.copy2(path, copy)
    spec_version = package_spec_version(copy)
    target = effective_target_name(spec_version, "iOS15")
    run.log_params({"precision": "file", "target": target.lower(), "coreml_file": str(path),
                    "effective_target": target.lower(), "spec_version": spec_version,
                    **({"image_type": f"color_layout={interface.color_layout}"} if interface.color_layout else {})})
    size = package_size(copy)
    return ConvertedModel(
        path=copy, spec_version=spec_version, effective_target=target, convert_seconds=0.0, size_bytes=size,
        weights_bytes=weights_size(copy), reference_size_bytes=size, reference_weights_bytes=0,
    )
