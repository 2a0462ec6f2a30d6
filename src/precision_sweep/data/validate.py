"""Cheap checks of the model and dataset paths, run before anything is loaded or tracked.

:func:`validate_sources` is what a multirun's launching process calls once, before it creates
the sweep's parent run: a missing path, a directory where a file belongs, or a file that is not
(or no longer) a model fails the command at once instead of failing every job. The same checks
run again when a job loads its inputs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

from precision_sweep.errors import UserInputError
from precision_sweep.targets import resolve_function

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _path_value(cfg):
    return config_value(cfg, "path")


def config_value(cfg, key: str):
    """``cfg[key]``, None where it is unset or ``???``."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig) and (key not in cfg or OmegaConf.is_missing(cfg, key)):
        return None
    return cfg.get(key) if isinstance(cfg, DictConfig) else getattr(cfg, key, None)


def _existing(path, key: str, what: str) -> Path:
    if path in (None, ""):
        raise UserInputError(f"{key} is not set. Set {key}=/path/to/{what} on the command line or in the config.")
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        raise UserInputError(
            f"{key}={path} does not exist (resolved to {resolved.resolve()}). Fix {key} to point at "
            f"{what}; relative paths are taken from the directory you run the command in."
        )
    return resolved


def check_keras_file(path: Path, key: str = "model.path") -> None:
    """Refuse a file that is not a whole Keras .keras (zip) or .h5 (HDF5) model file."""
    if not path.is_file():
        raise UserInputError(
            f"{key}={path} is a directory, not a .keras/.h5 file. For a SavedModel directory use "
            "model=saved_model; otherwise point at the file written by model.save('model.keras')."
        )
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise UserInputError(
            f"{key}={path} is not a Keras model file: expected a .keras or .h5 file (got "
            f"{path.suffix or 'no extension'!r}). Save the model with model.save('model.keras'); for "
            "a SavedModel directory use model=saved_model."
        )
    with open(path, "rb") as handle:
        head = handle.read(8)
    redo = "Re-save the model with model.save('model.keras') (or .h5) and copy the whole file."
    if path.suffix.lower() == ".keras":
        if not head.startswith(b"PK"):
            raise UserInputError(
                f"{key}={path} is not a Keras model: a .keras file is a zip archive and this file is "
                f"not one (it starts with {head[:4]!r}). {redo}"
            )
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserInputError(
                f"{key}={path} is truncated or corrupt: the .keras zip archive cannot be read ({exc}). {redo}"
            ) from exc
        if "config.json" not in names:
            raise UserInputError(
                f"{key}={path} is a zip archive but not a Keras model (no config.json inside; it holds "
                f"{', '.join(sorted(names)[:5]) or 'nothing'}). {redo}"
            )
        return
    if head != _HDF5_MAGIC:
        raise UserInputError(
            f"{key}={path} is not a Keras model: a .h5 file is an HDF5 file and this file is not one "
            f"(it starts with {head[:4]!r}). {redo}"
        )
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            has_config = "model_config" in h5.attrs
    except OSError as exc:
        raise UserInputError(
            f"{key}={path} is truncated or corrupt: the HDF5 file cannot be opened ({exc}). {redo}"
        ) from exc
    if not has_config:
        raise UserInputError(
            f"{key}={path} holds no model architecture (an HDF5 weights-only file?). Save the whole "
            "model with model.save('model.h5'), not model.save_weights()."
        )


def check_model_path(cfg) -> Path | None:
    """The model file or directory of a ``model`` config, checked; None for builtin models."""
    if cfg.source == "builtin":
        return None
    if cfg.source == "saved_model":
        path = _existing(_path_value(cfg), "model.path", "a SavedModel directory")
        if not path.is_dir() or not any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
            raise UserInputError(
                f"model.path={cfg.path} is not a SavedModel directory (no saved_model.pb in it). Point "
                "at the directory written by model.export(dir) or tf.saved_model.save; for a "
                ".keras/.h5 file use model=keras."
            )
        return path
    path = _existing(_path_value(cfg), "model.path", "a .keras or .h5 model file")
    check_keras_file(path)
    return path


def resolve_target(cfg) -> Callable[..., Any]:
    """The function ``dataset.target`` names (Hydra's ``get_method``), checked against
    ``dataset.kwargs``; a UserInputError saying how to fix it when it cannot be."""
    target = config_value(cfg, "target")
    if not target or not isinstance(target, str):
        raise UserInputError(
            "dataset=python needs dataset.target, the dotted path of your function that returns a "
            "tf.data.Dataset or an iterable of (inputs, labels) batches, e.g. "
            "dataset.target=mypackage.data.validation_batches."
        )
    function = resolve_function(target, "dataset.target", "a function")
    import inspect

    kwargs = target_kwargs(cfg)
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError as exc:
        raise UserInputError(
            f"dataset.target={target} cannot be called with dataset.kwargs={kwargs} ({exc}). Give exactly "
            "the keyword arguments the function takes, e.g. dataset.kwargs.n=100 (or +dataset.kwargs.n=100 "
            "for a new key)."
        ) from exc
    except ValueError:  # builtins without a signature: called as they are
        pass
    return function


def target_kwargs(cfg) -> dict:
    """``dataset.kwargs`` as a plain dict (empty when unset)."""
    from omegaconf import DictConfig, OmegaConf

    kwargs = config_value(cfg, "kwargs") or {}
    return OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else dict(kwargs)


def check_streaming(cfg) -> None:
    """``dataset.stream=true`` only for an image folder, the one source read a file at a time."""
    if cfg.get("stream") is True and str(cfg.source) != "image_folder":
        raise UserInputError(
            f"dataset.stream=true reads image files a batch at a time, and dataset={cfg.name} (source {cfg.source}) "
            "holds no image files: its samples are read into memory. Remove dataset.stream, or keep the images "
            "in a folder (dataset=image_folder)."
        )


def check_dataset_path(cfg) -> Path | None:
    """The dataset file or folder of a ``dataset`` config, checked; None for embedded datasets."""
    if cfg.source == "digits":
        return None
    if cfg.source == "python":
        resolve_target(cfg)  # imports the user's module
        return None
    if cfg.source == "tfrecord":
        tfrecord_files(cfg)
        return Path(str(cfg.path)).expanduser()
    if cfg.source == "tfds_folder":
        return tfds_builder_dir(cfg)
    if cfg.source == "npz":
        path = _existing(_path_value(cfg), "dataset.path", "an .npz file with arrays x and y")
        if not path.is_file():
            raise UserInputError(
                f"dataset.path={cfg.path} is a directory, not an .npz file. For a folder of images "
                "use dataset=image_folder; otherwise save the arrays with np.savez(path, x=..., y=...)."
            )
        return path
    path = _existing(_path_value(cfg), "dataset.path", "a folder with one subfolder of images per class")
    if not path.is_dir():
        raise UserInputError(
            f"dataset.path={cfg.path} is a file, not a folder. image_folder takes a folder with one "
            "subfolder per class holding PNG/JPEG files; for arrays use dataset=npz."
        )
    return path


def tfrecord_files(cfg) -> list[Path]:
    """The TFRecord files ``dataset.path`` names: a file, a glob, or a directory whose
    ``*.tfrecord*`` files are read (sorted by name)."""
    value = _path_value(cfg)
    fix = ("Point dataset.path at a .tfrecord file, a folder of .tfrecord files or a glob such as "
           "'/data/val-*.tfrecord' (quote it in the shell).")
    if value in (None, ""):
        raise UserInputError(f"dataset.path is not set. {fix}")
    resolved = Path(str(value)).expanduser()
    if any(ch in str(value) for ch in "*?["):
        files = sorted(p for p in resolved.parent.glob(resolved.name) if p.is_file())
        if not files:
            raise UserInputError(f"dataset.path={value} matches no file. {fix}")
        return files
    if resolved.is_dir():
        files = sorted(p for p in resolved.glob("*.tfrecord*") if p.is_file())
        if not files:
            raise UserInputError(f"dataset.path={value} is a folder without *.tfrecord files. {fix}")
        return files
    return [_existing(value, "dataset.path", "a .tfrecord file, a folder of them or a glob")]


def tfds_builder_dir(cfg) -> Path:
    """The prepared TFDS dataset folder ``<dataset.path>/<dataset.name_in_tfds>`` (the newest
    version folder when the name has none); refused unless it holds ``dataset_info.json``."""
    root = _existing(_path_value(cfg), "dataset.path", "a TFDS data dir (the data_dir the dataset was prepared into)")
    name = config_value(cfg, "name_in_tfds")
    if not name:
        raise UserInputError(
            "dataset.name_in_tfds is not set. Name the dataset under dataset.path with its version, as TFDS "
            "stores it, e.g. dataset.name_in_tfds=mnist/3.0.1."
        )
    folder = root / str(name)
    if folder.is_dir() and not (folder / "dataset_info.json").is_file():
        versions = sorted((d for d in folder.iterdir() if (d / "dataset_info.json").is_file()),
                          key=lambda d: [int(p) if p.isdigit() else -1 for p in d.name.split(".")])
        folder = versions[-1] if versions else folder
    if not (folder / "dataset_info.json").is_file():
        raise UserInputError(
            f"{folder} is not a prepared TFDS dataset (no dataset_info.json there), and precision-sweep never "
            "downloads or prepares data. Prepare it where the data can be fetched, e.g. "
            f"tfds.builder('{str(name).split('/')[0]}', data_dir=DIR).download_and_prepare() or "
            "`tfds build --data_dir DIR`, copy DIR here, and set dataset.path=DIR and "
            "dataset.name_in_tfds=<name>/<version> (the folder holding dataset_info.json)."
        )
    return folder


def check_coreml_file(value) -> Path:
    """The file at ``model.coreml_file``, refused when it does not exist or is no Core ML file."""
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise UserInputError(
            f"model.coreml_file={value} does not exist. Give the path of your .mlpackage (a folder) or "
            ".mlmodel file, e.g. precision-compare model.keras MyModel.mlpackage data/ (an absolute path "
            "in a sweep)."
        )
    if path.suffix == ".mlmodel" and path.is_file():
        return path.resolve()
    if path.suffix != ".mlpackage" or not path.is_dir():
        raise UserInputError(
            f"model.coreml_file={value} is not a Core ML model: give an .mlpackage folder or an .mlmodel "
            "file, as mlmodel.save('MyModel.mlpackage') (or .mlmodel) writes it."
        )
    return path.resolve()


def validate_sources(cfg) -> None:
    """Check the model and dataset paths of a composed config (cheap: no model is loaded).

    Raises :class:`~precision_sweep.errors.UserInputError` with the fix.
    """
    check_model_path(cfg.model)
    check_streaming(cfg.dataset)
    check_dataset_path(cfg.dataset)
    if cfg.model.get("coreml_file"):
        check_coreml_file(cfg.model.coreml_file)
