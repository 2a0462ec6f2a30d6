"""Large arrays straight from the system, and back to it when freed.

glibc's malloc serves a large block with mmap and returns it on free, but after such a free it
raises its mmap threshold to that block's size (up to 32 MiB on 64-bit Linux): later arrays of
that size come from the heap, whose freed space it keeps. Over a run of a large model the
resident set then grows far past the live arrays: ResNet50 at 224x224, batch 32, fp32 peaked
at 820 MiB for about 300 MiB of live arrays. A fixed threshold of 1 MiB keeps every large array
mmapped: 466 MiB on the same run, and no slower (0.97-0.98x the time on ResNet50 224 fp32 and
MobileNetV2 96 fp16 under ``all``, A/B in one process). It is set once per process, when the
emulator is imported (and again, cached, when a program runs), on glibc only; a threshold the user set (``MALLOC_MMAP_THRESHOLD_``) wins.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
THRESHOLD_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def release_large_arrays() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process; True when it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
