"""Samples streamed from image files: decoded a batch at a time, never all at once.

A :class:`StreamedImages` stands where an image folder's samples would be held in memory
(``Dataset.x_test``, ``pixels_test`` and the other splits, ``dataset.stream``): the list of
files, how they are decoded (:func:`~precision_sweep.data.images.read_images`) and the steps
that bring the decoded pixels to what the reader wants (the colour conversion, the
preprocessing, an image input's feed), each applied to a batch as it is read.

Reading it is slicing it, as an array: ``samples[i:j]`` (or an index array, or one index)
decodes those files and returns a plain ``ndarray``. Selecting without reading (the split, a
limit, a search's part) is :meth:`StreamedImages.take`, and a further step is
:meth:`StreamedImages.map`. ``np.asarray(samples)`` decodes everything (what a small set's
eager load does anyway). Memory therefore stays one batch of decoded images, whatever the
number of files: a job's evaluation, its TF baseline and its diagnosis read batches.

Its content hash (:meth:`StreamedImages.digest`) is the files' bytes, the decoding and the
steps' descriptions, read file by file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# The default decoded size above which dataset.stream=auto streams an image folder.
STREAM_ABOVE_BYTES = 1 << 30


@dataclass(frozen=True)
class Decoding:
    """How the files become pixels: :func:`~precision_sweep.data.images.read_images`' arguments."""

    size: tuple[int, int]  # (height, width)
    mode: str  # "L" or "RGB"
    resize: bool
    crop_and_scale: str

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


@dataclass(frozen=True)
class Step:
    """One step applied to each decoded batch; ``description`` enters the content hash, so it
    must name every setting the step's result depends on."""

    apply: Callable[[np.ndarray], np.ndarray]
    description: str


@dataclass(frozen=True, eq=False)
class StreamedImages:
    """Image files read a batch at a time (see the module docstring)."""

    files: tuple[Path, ...]
    decoding: Decoding
    steps: tuple[Step, ...] = ()
    _sample: list = field(default_factory=list, repr=False, compare=False)  # [first sample], once read
    _digest: list = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.files)

    def _first(self) -> np.ndarray:
        if not self._sample:
            if not self.files:
                raise ValueError("no image files to read a sample's shape from")
            self._sample.append(self._read(self.files[:1])[0])
        return self._sample[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._first().shape)

    @property
    def ndim(self) -> int:
        return 1 + self._first().ndim

    @property
    def dtype(self) -> np.dtype:
        return self._first().dtype

    def _read(self, files) -> np.ndarray:
        from precision_sweep.data.images import read_images

        d = self.decoding
        if not len(files):
            x = np.zeros((0, *d.size, d.channels), dtype=np.float32)
        else:
            x = read_images(list(files), d.size, d.mode, d.resize, d.crop_and_scale)
        for step in self.steps:
            x = step.apply(x)
        return x

    def __getitem__(self, index) -> np.ndarray:
        """The decoded samples at ``index`` (an int, a slice, or an index array)."""
        if isinstance(index, (int, np.integer)):
            return self._read([self.files[int(index)]])[0]
        if isinstance(index, slice):
            return self._read(self.files[index])
        return self._read([self.files[int(i)] for i in np.asarray(index).reshape(-1)])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self._read(self.files)
        return x if dtype is None else x.astype(dtype, copy=False)

    def take(self, index) -> StreamedImages:
        """The samples at ``index`` (a slice or an index array), still unread."""
        files = self.files[index] if isinstance(index, slice) else tuple(self.files[int(i)] for i in np.asarray(index).reshape(-1))
        return StreamedImages(files, self.decoding, self.steps)

    def map(self, apply: Callable[[np.ndarray], np.ndarray], description: str) -> StreamedImages:
        """These samples with one more step applied to each batch read."""
        return StreamedImages(self.files, self.decoding, (*self.steps, Step(apply, description)))

    def batches(self, size: int):
        """``(start, decoded batch)`` in order."""
        for start in range(0, len(self), size):
            yield start, self[start:start + size]

    def digest(self) -> str:
        """A hash of every file's bytes, in order, with the decoding and the steps."""
        if not self._digest:
            h = hashlib.sha256(repr((self.decoding, [s.description for s in self.steps])).encode())
            for path in self.files:
                h.update(str(path.name).encode())
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            self._digest.append(h.hexdigest()[:16])
        return self._digest[0]


def rows(x, index):
    """``x[index]`` for samples held in memory; for :class:`StreamedImages`, the same rows
    unread (:meth:`StreamedImages.take`)."""
    return x.take(index) if isinstance(x, StreamedImages) else x[index]


def transformed(x, apply: Callable[[np.ndarray], np.ndarray], description: str):
    """``apply(x)`` for samples in memory; for :class:`StreamedImages`, ``apply`` as one more
    step on each batch read (``description`` names its settings, for the content hash)."""
    return x.map(apply, description) if isinstance(x, StreamedImages) else apply(x)
