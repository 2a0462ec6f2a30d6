"""One pool of threads for the emulator's parallel work: BLAS calls and the compiled kernels.

OpenBLAS's worker threads spin for a while after every call, waiting for the next one. The
compiled kernels (``ops/_*_kernels.py``, ``_casts.py``) run on numba's own threads, and on a machine with few
cores the two pools fight over them: a depthwise conv run just after a 1x1 conv took three
times as long as the same conv run alone. So while a program runs (:func:`single_threaded_blas`),
OpenBLAS gets one thread and :func:`matmul` splits large products into row or batch chunks,
each one a plain single-threaded ``np.matmul`` into its slice of the output, on a small thread
pool whose idle threads sleep. That is how OpenBLAS's own threads share a product too (by
blocks of rows and columns); each output element is still one BLAS dot product over the whole
reduced axis in float32.
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Below this many multiply-adds a product is not worth splitting.
SPLIT_MIN_WORK = 1 << 21


def workers() -> int:
    """Threads for parallel work: numba's count, which follows ``NUMBA_NUM_THREADS``."""
    import numba

    return max(1, min(numba.get_num_threads(), os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="precision-sweep-emulator")


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread inside the block (parallelism comes from :func:`matmul`)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield


def _chunks(length: int, parts: int) -> list[slice]:
    bounds = np.linspace(0, length, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# Below this many elements an element-wise kernel is not worth splitting.
SPLIT_MIN_ELEMENTS = 1 << 16


# Elements per call of an element-wise fill: its passes over a block stay in the core's cache
# (SiLU over 12.8M float32 values on an Intel Xeon: 12.2 ms in two halves, 8.4 ms in blocks of
# this size; EfficientNetB0's 49 SiLUs at 224², batch 32: 159 ms -> 135 ms).
FILL_BLOCK_ELEMENTS = 1 << 16


def _fill_blocks(fill, x: np.ndarray, out: np.ndarray) -> None:
    for start in range(0, x.size, FILL_BLOCK_ELEMENTS):
        fill(x[start:start + FILL_BLOCK_ELEMENTS], out[start:start + FILL_BLOCK_ELEMENTS])


def elementwise(fill, x: np.ndarray) -> np.ndarray:
    """A new array of ``x``'s shape and dtype, filled by ``fill(x_part, out_part)`` over chunks
    of the flattened ``x`` on the pool (numpy's loops release the GIL), each chunk in blocks
    that stay in cache. ``fill`` must compute each element from the same element of ``x``
    alone, so the chunks and blocks do not change a value."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    parts = workers()
    if parts == 1 or flat.size < SPLIT_MIN_ELEMENTS:
        _fill_blocks(fill, flat, out)
    else:
        errors = np.geterr()  # the caller's floating-point error handling (thread-local)

        def fill_part(part: slice) -> None:
            with np.errstate(**errors):
                _fill_blocks(fill, flat[part], out[part])

        list(_pool().map(fill_part, _chunks(flat.size, parts)))
    return out.reshape(np.shape(x))


def in_place_row_blocks(apply, rows: np.ndarray) -> None:
    """Call ``apply(block_rows, scratch)`` on consecutive blocks of the rows of the 2-D ``rows``
    (each block about ``FILL_BLOCK_ELEMENTS`` elements, at least one row), the blocks shared
    out over the pool in contiguous runs. ``apply`` works on ``rows[block_rows]`` in place, so
    each block's passes stay in the core's cache. ``scratch`` is the worker's own flat buffer of
    ``rows``' dtype, large enough for a block."""
    count, width = rows.shape
    per_block = max(1, FILL_BLOCK_ELEMENTS // max(width, 1))
    blocks = [slice(start, min(start + per_block, count)) for start in range(0, count, per_block)]
    errors = np.geterr()  # the caller's floating-point error handling (thread-local)

    def run(part: slice) -> None:
        buffer = np.empty(per_block * width, dtype=rows.dtype)
        with np.errstate(**errors):
            for block in blocks[part]:
                apply(block, buffer)

    parts = workers()
    if parts == 1 or rows.size < SPLIT_MIN_ELEMENTS or len(blocks) == 1:
        run(slice(None))
    else:
        list(_pool().map(run, _chunks(len(blocks), parts)))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b)`` for float operands, split across the pool when it is large.

    Splits along the leading batch axis of the result when there is one, else along the rows
    of ``a``; operands are broadcast as ``np.matmul`` does. ``out``, if given, receives the
    result (as in ``np.matmul``).
    """
    parts = workers()
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    work = int(np.prod(shape, dtype=np.int64)) * a.shape[-1]
    if parts == 1 or work < SPLIT_MIN_WORK:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(shape, dtype=np.result_type(a, b))
    if len(shape) > 2 and shape[0] >= parts:
        a_full = np.broadcast_to(a, shape[:-2] + a.shape[-2:]) if a.ndim == len(shape) else a
        b_full = np.broadcast_to(b, shape[:-2] + b.shape[-2:]) if b.ndim == len(shape) else b

        def run(part: slice) -> None:
            a_part = a_full[part] if a_full.ndim == len(shape) else a_full
            b_part = b_full[part] if b_full.ndim == len(shape) else b_full
            np.matmul(a_part, b_part, out=out[part])

        pieces = _chunks(shape[0], parts)
    elif shape[-2] >= parts:

        def run(part: slice) -> None:
            np.matmul(a[..., part, :], b, out=out[..., part, :])

        pieces = _chunks(shape[-2], parts)
    else:

        def run(part: slice) -> None:
            np.matmul(a, b[..., :, part], out=out[..., :, part])

        pieces = _chunks(shape[-1], parts)
    for future in [_pool().submit(run, piece) for piece in pieces]:
        future.result()
    return out
