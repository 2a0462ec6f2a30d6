"""Freed memory kept for the next array: every array from glibc's heap, none returned.

A run allocates and frees large arrays op after op, and every fresh page costs a page fault on
first touch. glibc serves a large block with mmap, fresh pages each time, and returns it on
free; the emulator used to fix that threshold at 1 MiB to keep the resident set near the live
arrays, and paid for it in faults: on an Intel Xeon VM a new 2 MiB array filled once took
0.63 ms against 0.07 ms for the same fill of a warm one. TensorFlow's allocator pools its
buffers; the emulator's arrays are numpy's, so it tunes glibc instead: no mmapped blocks
(``M_MMAP_MAX`` 0) and no trimming of the heap's top (``M_TRIM_THRESHOLD`` at its largest), so a
freed array's pages serve the next one warm.

Measured on that Xeon (``benchmarks/allocator_policy.py``, 3 alternating processes per
policy, batch 32, numpy unpinned), this policy against the 1 MiB threshold: time 0.70
(MobileNetV2 224 fp32), 0.56 (EfficientNetB0 96 fp16 ``cpu_and_gpu``), 0.90 (ResNet50 224 fp32),
0.76 (ViT 224 fp16 ``cpu_and_ne``); the predictions' high-water mark 1.05, 1.13, 1.22 and 1.36x
(ResNet50 431 against 355 MiB). The resident set stays flat at that mark over 12 predictions
instead of falling back to the loaded program's between them: memory held, not growing.

Set once per process, when the emulator is imported (and again, cached, when a program runs),
on glibc only. A malloc setting the user made in the environment (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``glibc.malloc`` tunables)
wins: nothing is set then.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_MAX = -4
LARGEST_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Keep freed memory in glibc's heap for the next arrays (see module docstring); True when
    it was set."""
    if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))
