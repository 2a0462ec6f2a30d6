"""Image folders: one subfolder per class, PNG/JPEG files, decoded with Pillow.

Class indices follow the sorted subfolder names, and an empty class folder keeps its index
(the indices must line up with the model's outputs). Files that are not PNG/JPEG by their
extension (README, .DS_Store, thumbnails databases) are skipped with a warning and counted;
a file with an image extension that does not decode fails the load, naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from precision_sweep.errors import UserInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


def read_images(files: list[Path], size: tuple[int, int] | None, mode: str, resize: bool) -> np.ndarray:
    """Decode ``files`` as ``mode`` ("L" or "RGB") into a float32 NHWC array of pixel values 0..255.

    ``size`` is (height, width); None keeps the images' own size, which must then be uniform.
    """
    from PIL import Image, UnidentifiedImageError

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
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
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
