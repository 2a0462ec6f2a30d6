"""Labeled datasets: the embedded digits, ``.npz`` arrays and image folders (the user's
functions, TFRecord files and TFDS folders: :mod:`precision_sweep.data.sources`).

Every source yields raw samples and integer labels; one seeded split gives the test samples
(evaluated), the train samples (used only to train builtin models) and the calibration
samples (drawn from the train split, never from the test split); one preprocessing function
(config-driven: color, channel order, scale, mean/std, layout) brings them to the model input.

An image folder whose decoded pixels would pass 1 GiB (or any, with ``dataset.stream=true``)
is kept as its files (:class:`~precision_sweep.data.streamed.StreamedImages`): the split and
the limit select files, and the colour conversion and preprocessing become steps applied to
each batch read, so the same rules give the same samples without holding them.
"""

from __future__ import annotations

import logging
import weakref
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from precision_sweep.data import split_cache
from precision_sweep.data.preprocessing import ImageFeed
from precision_sweep.data.streamed import STREAM_ABOVE_BYTES, Decoding, StreamedImages, rows, transformed
from precision_sweep.data.validate import check_dataset_path
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays
from precision_sweep.samples import NamedSamples, hash_parts

log = logging.getLogger(__name__)

# ITU-R BT.601 luma, the weights Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Dataset:
    """Train/test/calibration samples in the model's input layout (one array, or
    :class:`NamedSamples` for a model with several inputs), and their labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)
    x_calib: np.ndarray | None = None
    y_calib: np.ndarray | None = None
    # Recorded on the job's run (class order, skipped files, split sizes).
    run_params: dict = field(default_factory=dict)
    # The test and calibration images as pixels (NHWC, RGB or grayscale, after the colour
    # conversion and before channel order, scale, mean/std and layout): what an app feeds an
    # image input. None for samples that are not images.
    pixels_test: np.ndarray | None = None
    pixels_calib: np.ndarray | None = None
    # How a converted program takes its input: None feeds x_test/x_calib (a tensor input); an
    # ImageFeed feeds the pixels as Core ML feeds an image input (set by the job).
    feed: ImageFeed | None = None
    # The source image of each test sample where several samples come from one image
    # (dataset.shifts); None: every sample is its own. A split of the test samples keeps a
    # group together.
    test_groups: np.ndarray | None = None
    # (weak references to the x_test and y_test hashed, their hash): a job reads the hash many
    # times, and hashing a large test set reads every byte of it.
    _hashed: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def program_inputs(self, split: str = "test") -> np.ndarray:
        """The samples of ``split`` ("test" or "calib") as the converted program takes them."""
        if self.feed is None:
            return self.x_test if split == "test" else self.x_calib
        pixels = self.pixels_test if split == "test" else self.pixels_calib
        return transformed(pixels, self.feed, repr(self.feed))

    @property
    def content_hash(self) -> str:
        """Hash of the evaluated (test) arrays: runs on different data never compare silently.
        Computed once for the arrays ``x_test`` and ``y_test`` hold (again when either is replaced)."""
        if self._hashed is not None and self._hashed[0]() is self.x_test and self._hashed[1]() is self.y_test:
            return self._hashed[2]
        if isinstance(self.x_test, StreamedImages):  # the files' bytes, read one by one
            digest = hash_arrays([self.y_test], extra=["streamed", self.x_test.digest()])
        else:
            names = sorted(self.x_test.names) if isinstance(self.x_test, NamedSamples) else None
            digest = hash_arrays([*hash_parts(self.x_test), self.y_test], extra=names)
        try:
            self._hashed = (weakref.ref(self.x_test), weakref.ref(self.y_test), digest)
        except TypeError:  # not an array (a list of labels): hashed at every read
            self._hashed = None
        return digest

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class InputSpec:
    """What the model takes: per-sample shape (None = not known yet) and dtype; for a model
    with several inputs, each as ``(name, shape, dtype)`` in ``inputs``."""

    shape: tuple | None = None
    dtype: str = "float32"
    inputs: tuple = ()


def _channels(spec: InputSpec, layout: str) -> int | None:
    if spec.shape is None or len(spec.shape) != 3:
        return None
    return int(spec.shape[0] if layout == "nchw" else spec.shape[-1])


def to_model_channels(x: np.ndarray, cfg, spec: InputSpec) -> np.ndarray:
    """Raw NHWC images converted to the model's channels (grayscale <-> RGB), as float32
    pixels; other ranks unchanged. The first step of :func:`preprocess`."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        want = {"grayscale": 1, "rgb": 3}.get(cfg.color) or _channels(spec, cfg.layout)
        have = x.shape[-1]
        if want is not None and want != have:
            if have == 3 and want == 1:
                x = (x @ _LUMA)[..., None]
            elif have == 1 and want == 3:
                x = np.repeat(x, 3, axis=-1)
            else:
                raise UserInputError(
                    f"dataset={cfg.name} has {have}-channel images but the model input takes {want} "
                    f"channels; only grayscale (1) <-> RGB (3) conversion exists. Export the model "
                    "for 1 or 3 channels, or provide images with matching channels."
                )
    return x


def _preprocess_named(x: NamedSamples, cfg, spec: InputSpec) -> NamedSamples:
    """Several inputs are stored as the model takes them: each is cast to its input's dtype
    (int64 token ids to int32, as Core ML takes them); the image preprocessing does not apply."""
    changed = [key for key, default in (("scale", 1.0), ("mean", None), ("std", None)) if cfg[key] != default]
    if changed:
        raise UserInputError(
            f"dataset.{changed[0]}={cfg[changed[0]]} preprocesses a single input; the model takes several "
            f"({', '.join(x.names)}), which are read as stored. Store each input as the model takes it and "
            f"set dataset.{changed[0]}={'1.0' if changed[0] == 'scale' else 'null'}."
        )
    dtypes = {name: dtype for name, _, dtype in spec.inputs}
    return NamedSamples({name: np.ascontiguousarray(array.astype(dtypes.get(name, array.dtype), copy=False))
                         for name, array in x.arrays.items()})


def preprocess(x: np.ndarray, cfg, spec: InputSpec) -> np.ndarray:
    """Apply the dataset config's preprocessing to raw NHWC samples (other ranks: scale, mean/std)."""
    if isinstance(x, NamedSamples):
        return _preprocess_named(x, cfg, spec)
    x = to_model_channels(x, cfg, spec)
    image = x.ndim == 4
    if image:
        if cfg.channel_order == "bgr" and x.shape[-1] == 3:
            x = x[..., ::-1]
    # One copy of the samples at most (the first step that changes them makes it; the next steps
    # work in it): a large test set is held once preprocessed, besides its pixels.
    owned = False
    if float(cfg.scale) != 1.0:
        x, owned = x * np.float32(cfg.scale), True
    for key in ("mean", "std"):
        values = cfg[key]
        if values is None:
            continue
        values = np.asarray(list(values), dtype=np.float32)
        if values.size not in (1, x.shape[-1]):
            raise UserInputError(
                f"dataset.{key} has {values.size} values but the samples have {x.shape[-1]} channels "
                f"(last axis). Give one value, or one per channel, e.g. dataset.{key}=[0.5,0.5,0.5]."
            )
        if key == "std" and np.any(values == 0):
            raise UserInputError(f"dataset.std contains 0 ({list(values)}); every std must be non-zero.")
        operation = np.subtract if key == "mean" else np.divide
        x, owned = (operation(x, values, out=x) if owned else operation(x, values)), True
    if image and cfg.layout == "nchw":
        x = np.transpose(x, (0, 3, 1, 2))
    return np.ascontiguousarray(x.astype(spec.dtype, copy=False))


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:  # one-hot rows
        if not np.allclose(y.sum(axis=1), 1.0):
            raise UserInputError(
                f"Labels {where} are 2-D {y.shape} but not one-hot. Store y as integer class indices, shape (N,)."
            )
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise UserInputError(f"Labels {where} have shape {y.shape}; store y as integer class indices, shape (N,).")
    if not np.issubdtype(y.dtype, np.number) or (y.size and not np.all(np.mod(y, 1) == 0)):
        raise UserInputError(
            f"Labels {where} must be integer class indices (found dtype {y.dtype}). Store y as integers 0..K-1."
        )
    return y.astype(np.int64)


def _values(y: np.ndarray, where: str) -> np.ndarray:
    """Labels that are values (``task.labels=values``): numeric arrays, one per sample, finite."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_:
        raise UserInputError(f"Labels {where} have dtype {y.dtype}; store y as numbers, one array per sample.")
    _check_finite(y, f"the labels (y) {where}")
    return y


def _check_finite(x: np.ndarray, where: str) -> None:
    """Refuse samples holding NaN or Inf: they would run, and their drift be blamed on fp16."""
    if np.issubdtype(x.dtype, np.floating) and x.size:
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise UserInputError(
                f"{int(bad.sum())} of {len(x)} samples in {where} hold NaN or Inf values (the first is "
                f"sample {first}). Remove or repair those samples (e.g. x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)], "
                "with their labels) and save the file again."
            )


def _split(cfg, x: np.ndarray, y: np.ndarray, cache_dir: Path | None):
    """Seeded split: (x_train, y_train, x_test, y_test); stratified when every class allows it
    (labels that are values, not classes, split as one class: a plain seeded split)."""
    if float(cfg.test_size) >= 1.0 or len(y) < 2:
        order = np.random.default_rng(cfg.seed).permutation(len(y))
        return rows(x, slice(0, 0)), y[:0], rows(x, order), y[order]
    strata = y if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) else np.zeros(len(y), np.int64)
    train, test = split_cache.split_indices(strata, float(cfg.test_size), int(cfg.seed), cache_dir)
    return rows(x, train), y[train], rows(x, test), y[test]


def _shifted(x: np.ndarray, y: np.ndarray, shifts: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of ``x`` (N, H, W, C) at each shift of up to ``shifts`` pixels along H and W,
    zero-filled (``scipy.ndimage.shift``, nearest: whole pixels), shift by shift."""
    from scipy.ndimage import shift

    offsets = [(dy, dx) for dy in range(-shifts, shifts + 1) for dx in range(-shifts, shifts + 1)]
    images = [x if (dy, dx) == (0, 0) else shift(x, (0, dy, dx, 0), order=0, mode="constant", cval=0)
              for dy, dx in offsets]
    return np.concatenate(images), np.tile(y, len(offsets))


def _assemble(cfg, x_raw, y, class_names, spec: InputSpec, run_params: dict, cache_dir: Path | None) -> Dataset:
    x_train, y_train, x_test, y_test = _split(cfg, x_raw, y, cache_dir)
    shifts = int(cfg.get("shifts") or 0)
    test_groups = None
    streamed = isinstance(x_raw, StreamedImages)
    images = streamed or (not isinstance(x_raw, NamedSamples) and np.ndim(x_raw) == 4)
    if shifts and streamed:
        raise UserInputError(
            f"dataset.shifts={shifts} multiplies the test images in memory, and dataset={cfg.name} is streamed "
            "from its files (dataset.stream). Set dataset.stream=false (the images then must fit in memory) "
            "or dataset.shifts=0."
        )
    if shifts:
        if not images:
            raise UserInputError(f"dataset.shifts={shifts} shifts images; dataset={cfg.name} holds no images. Set dataset.shifts=0.")
        x_train, y_train = _shifted(x_train, y_train, shifts)
        test_groups = np.tile(np.arange(len(y_test)), (2 * shifts + 1) ** 2)
        x_test, y_test = _shifted(x_test, y_test, shifts)
    if cfg.limit:
        x_test, y_test = rows(x_test, slice(0, cfg.limit)), y_test[: cfg.limit]
        test_groups = None if test_groups is None else test_groups[: cfg.limit]
    if len(x_test) == 0:
        raise UserInputError(
            f"dataset={cfg.name} leaves no test samples (limit={cfg.limit}, test_size={cfg.test_size}). "
            "Raise dataset.test_size or dataset.limit."
        )
    n_calib = min(max(int(cfg.calib_size), 0), len(x_train))
    x_calib, y_calib = x_train[:n_calib], y_train[:n_calib]
    if n_calib < cfg.calib_size:
        log.info("dataset %s: %d calibration samples (train split is %d)", cfg.name, n_calib, len(x_train))
    run_params = {
        **run_params,
        "dataset_n_test": len(x_test),
        "dataset_n_calib": n_calib,
    }

    def preprocessed(x):
        return transformed(x, partial(preprocess, cfg=cfg, spec=spec), _preprocessing_text(cfg, spec))

    def pixels(x):
        return transformed(x, partial(to_model_channels, cfg=cfg, spec=spec), _preprocessing_text(cfg, spec, "pixels"))

    return Dataset(
        name=cfg.name,
        x_train=preprocessed(x_train),
        y_train=y_train,
        x_test=preprocessed(x_test),
        y_test=y_test,
        class_names=class_names,
        x_calib=preprocessed(x_calib),
        y_calib=y_calib,
        run_params=run_params,
        pixels_test=pixels(x_test) if images else None,
        pixels_calib=pixels(x_calib) if images else None,
        test_groups=test_groups,
    )


def _preprocessing_text(cfg, spec: InputSpec, what: str = "preprocess") -> str:
    """Every setting :func:`preprocess` (``what="pixels"``: :func:`to_model_channels`) reads,
    for the content hash of streamed samples."""
    keys = ("color", "layout") if what == "pixels" else ("color", "layout", "channel_order", "scale", "mean", "std")
    return repr((what, {key: cfg.get(key) for key in keys}, spec.shape, spec.dtype))


def _digits(cfg, spec: InputSpec, cache_dir: Path | None) -> Dataset:
    images, y, class_names = split_cache.digits(cache_dir)
    return _assemble(cfg, images[..., None], y, class_names, spec, {}, cache_dir)  # (N, 8, 8, 1), 0..16


def _npz(cfg, spec: InputSpec, cache_dir: Path | None, labels: str = "classes") -> Dataset:
    path = check_dataset_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            wanted = [name for name, _, _ in spec.inputs] or ["x"]
            missing = [k for k in (*wanted, "y") if k not in keys]
            if missing:
                saving = ", ".join(f"{k}=..." for k in wanted)
                raise UserInputError(
                    f"The npz file dataset.path={path} has no array {' or '.join(missing)} (it holds: "
                    f"{', '.join(keys) or 'nothing'}). Save it with np.savez(path, {saving}, y=labels)"
                    + (": one array per model input, named as the input." if spec.inputs else ".")
                )
            x = {k: archive[k] for k in wanted} if spec.inputs else archive["x"]
            y = archive["y"]
            names = archive["class_names"] if "class_names" in keys else None
    except UserInputError:
        raise
    except ValueError as exc:
        raise UserInputError(
            f"Cannot load dataset.path={path} without pickle ({exc}). Store x and y as numeric arrays "
            "(not object arrays): np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y, np.int64))."
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(
            f"dataset.path={path} is not a readable .npz file ({type(exc).__name__}: {exc}). Write it "
            "with np.savez(path, x=samples, y=labels)."
        ) from exc
    for name, array in (x.items() if isinstance(x, dict) else [("x", x)]):
        if len(array) != len(y):
            raise UserInputError(
                f"The npz file dataset.path={path} has {len(array)} samples in {name} but {len(y)} labels in y. "
                f"{name} and y must have the same length (one label per sample)."
            )
    if isinstance(x, dict):
        x = NamedSamples(x)
    return assemble_labelled(cfg, x, y, names, spec, cache_dir, labels, f"dataset.path={path}")


def assemble_labelled(cfg, x: np.ndarray, y: np.ndarray, names, spec: InputSpec, cache_dir: Path | None,
                      labels: str, where: str, run_params: dict | None = None) -> Dataset:
    """A :class:`Dataset` from samples ``x`` and labels ``y`` read as the task's ``labels`` kind
    (classes, ids or values): the rule of every source whose labels are not class folders.
    ``names`` are the class names (None: "0".."K-1"); ``where`` names the data in messages."""
    for name, array in (x.arrays.items() if isinstance(x, NamedSamples) else [("x", x)]):
        if not np.issubdtype(array.dtype, np.number):
            raise UserInputError(f"{name} in {where} has dtype {array.dtype}; store numeric samples.")
        _check_finite(array, where)
    if labels == "values":
        return _assemble(cfg, x, _values(y, f"in {where}"), [], spec, run_params or {}, cache_dir)
    y = _labels(y, f"in {where}")
    if names is not None:
        class_names = [str(n) for n in names]
    else:
        class_names = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return _assemble(cfg, x, y, class_names if labels == "classes" else [], spec, run_params or {}, cache_dir)


def _image_folder(cfg, spec: InputSpec, cache_dir: Path | None) -> Dataset:
    from precision_sweep.data.images import list_image_folder, read_images

    root = check_dataset_path(cfg)
    class_names, files, skipped = list_image_folder(root)
    size, channels = None, {"grayscale": 1, "rgb": 3}.get(cfg.color)
    if spec.shape is not None:
        if len(spec.shape) != 3:
            raise UserInputError(
                f"dataset={cfg.name} holds images but the model input has shape {tuple(spec.shape)}, "
                "not an image (height, width, channels). Use an image model, or an npz dataset "
                "whose samples already have the model's input shape."
            )
        layout = cfg.layout
        model_channels = _channels(spec, layout)
        size = tuple(spec.shape[1:]) if layout == "nchw" else tuple(spec.shape[:2])
        if model_channels not in (1, 3):
            hint = (
                " It looks channels-first: set dataset.layout=nchw."
                if layout == "nhwc" and spec.shape[0] in (1, 3)
                else ""
            )
            raise UserInputError(
                f"The model input {tuple(spec.shape)} ({layout}) has {model_channels} channels, which "
                f"images cannot fill: images are grayscale (1 channel) or RGB (3 channels).{hint}"
            )
        if channels is not None and channels != model_channels:
            raise UserInputError(
                f"dataset.color={cfg.color} gives {channels}-channel images but the model input takes "
                f"{model_channels}. Set dataset.color=auto."
            )
        channels = model_channels
    mode = "L" if channels == 1 else "RGB"
    if _streams(cfg, size, mode, len(files)):
        x = StreamedImages(tuple(f for f, _ in files), Decoding(size, mode, bool(cfg.resize), str(cfg.crop_and_scale)))
    else:
        x = read_images([f for f, _ in files], size, mode, cfg.resize, cfg.crop_and_scale)
    y = np.array([label for _, label in files], dtype=np.int64)
    joined = ",".join(class_names)
    run_params = {
        "dataset_classes": joined if len(joined) <= 500 else joined[:497] + "...",
        "dataset_n_classes": len(class_names),
        "dataset_skipped_files": len(skipped),
        "dataset_crop_and_scale": str(cfg.crop_and_scale),
    }
    return _assemble(cfg, x, y, class_names, spec, run_params, cache_dir)


def _streams(cfg, size: tuple | None, mode: str, count: int) -> bool:
    """Whether the image folder is streamed from its files (``dataset.stream``: true, false, or
    null: when its decoded float32 pixels would pass 1 GiB)."""
    stream = cfg.get("stream")
    if stream is False or (stream is None and size is None):
        return False
    if size is None:
        raise UserInputError(
            f"dataset.stream=true reads dataset={cfg.name}'s images a batch at a time at the model's input size, "
            "and no input size is known yet (the model is built from the data). Set model.input_shape=[H,W,C], "
            "or dataset.stream=null."
        )
    decoded = count * size[0] * size[1] * (1 if mode == "L" else 3) * 4
    return stream is True or decoded > STREAM_ABOVE_BYTES


LOADERS = {"digits": _digits, "npz": _npz, "image_folder": _image_folder}
