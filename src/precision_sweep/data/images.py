"""Image folders: one subfolder per class, PNG/JPEG files, decoded with Pillow.

Class indices follow the sorted subfolder names, and an empty class folder keeps its index
(the indices must line up with the model's outputs). Files that are not PNG/JPEG by their
extension (README, .DS_Store, thumbnails databases) are skipped with a warning and counted;
a file with an image extension that does not decode fails the load, naming the file.

Images whose size differs from the model input are resized the way an app's Vision request
does it, by ``dataset.crop_and_scale`` (named after ``VNImageCropAndScaleOption``), always with
Pillow's bilinear filter (Vision's own filter is not public):

* ``scale_fill``: stretch to the input size, ignoring the aspect ratio (Vision's scaleFill);
* ``center_crop``: keep the aspect ratio, scale so the image covers the input, crop the centre
  of the long side (Vision's centerCrop);
* ``scale_fit``: keep the aspect ratio, scale so the whole image fits, pad the rest
  (centred) with zeros, i.e. black (Vision's scaleFit; Vision does not document its fill).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from precision_sweep.errors import UserInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CROP_AND_SCALE = ("scale_fill", "center_crop", "scale_fit")


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[Path]]:
    """``(class_names, [(file, label)], skipped_files)`` of the folder ``root``."""
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    skipped: list[Path] = []
    skipped += [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((path, label))
                found += 1
            else:
                skipped.append(path)
        if not found:
            log.warning("class folder %s has no PNG/JPEG images (its label %d is kept)", class_dir, label)
    if not files:
        raise UserInputError(
            f"The image folder dataset.path={root} holds no PNG/JPEG images in class subfolders "
            f"(found {len(class_dirs)} subfolder(s)). Put one subfolder per class under it, e.g. "
            f"{root}/cat/001.png, {root}/dog/002.jpg."
        )
    if skipped:
        names = ", ".join(str(p.relative_to(root)) for p in skipped[:5])
        log.warning(
            "skipped %d file(s) that are not PNG/JPEG images or not in a class folder: %s%s",
            len(skipped), names, " ..." if len(skipped) > 5 else "",
        )
    return [p.name for p in class_dirs], files, skipped


def fit_image(image, size: tuple[int, int], crop_and_scale: str = "scale_fill"):
    """Resize the Pillow ``image`` to ``size`` (width, height) as Vision's ``crop_and_scale`` does.

    Parameters
    ----------
    image : PIL.Image.Image
        The decoded image.
    size : tuple of int
        The target (width, height), Pillow's order.
    crop_and_scale : {"scale_fill", "center_crop", "scale_fit"}
        See the module docstring. The filter is bilinear for all three; ``scale_fit`` pads with 0.

    Returns
    -------
    PIL.Image.Image
        An image of exactly ``size``.
    """
    from PIL import Image, ImageOps

    bilinear = Image.Resampling.BILINEAR
    if crop_and_scale == "scale_fill":
        return image.resize(size, bilinear)
    if crop_and_scale == "center_crop":
        return ImageOps.fit(image, size, bilinear)
    if crop_and_scale == "scale_fit":
        return ImageOps.pad(image, size, bilinear, color=0)
    raise ValueError(f"unknown crop_and_scale {crop_and_scale!r}")


def read_images(
    files: list[Path], size: tuple[int, int] | None, mode: str, resize: bool, crop_and_scale: str = "scale_fill"
) -> np.ndarray:
    """Decode ``files`` as ``mode`` ("L" or "RGB") into a float32 NHWC array of pixel values 0..255.

    ``size`` is (height, width); None keeps the images' own size, which must then be uniform.
    An image of another size is resized by :func:`fit_image` with ``crop_and_scale`` when
    ``resize`` is true, and refused otherwise.
    """
    from PIL import Image, UnidentifiedImageError

    if crop_and_scale not in CROP_AND_SCALE:  # the config schema refuses it first
        raise ValueError(f"crop_and_scale is {crop_and_scale!r}, not one of {CROP_AND_SCALE}")
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if size is not None and image.size != (size[1], size[0]):
                    if not resize:
                        raise UserInputError(
                            f"Image {path} is {image.size[1]}x{image.size[0]} (height x width) but the "
                            f"model input is {size[0]}x{size[1]} and dataset.resize=false. Set "
                            "dataset.resize=true to resize every image to the model input, or resize the files."
                        )
                    image = fit_image(image, (size[1], size[0]), crop_and_scale)
                arrays.append(np.asarray(image, dtype=np.float32))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise UserInputError(
                f"Cannot decode the image {path} ({type(exc).__name__}: {exc}). Replace or remove "
                "the file: every .png/.jpg/.jpeg file in a class folder must be a readable image."
            ) from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserInputError(
            f"The images of the folder have different sizes ({', '.join(map(str, sorted(shapes)[:4]))}) "
            "and no model input size is known to resize them to. Use a model with a fixed input "
            "size (model.input_shape=[H,W,C]) or resize the files to one size."
        )
    x = np.stack(arrays)
    return x[..., None] if x.ndim == 3 else x
