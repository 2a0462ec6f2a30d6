"""Freed large arrays go back to the system once a program has run (emulator/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PATTERN = textwrap.dedent(
    """
    import ctypes
    import sys
    import numpy as np
    if sys.argv[1] == "release":
        from precision_sweep.emulator.allocator import release_large_arrays
        assert release_large_arrays()

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mapped_mib():  # bytes in blocks malloc got from mmap (and gives back on free)
        return libc.mallinfo2().hblkhd / 2**20

    big = np.ones(16 << 18, dtype=np.float32)  # 16 MiB, mmapped; freeing it raises glibc's threshold
    del big
    before = mapped_mib()
    blocks = [np.ones(1 << 20, dtype=np.float32) for _ in range(5)]  # 5 x 4 MiB
    print(mapped_mib() - before)
    """
)


def _growth(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_arrays_are_mapped_and_so_freed_to_the_system_once_the_threshold_is_fixed():
    on_heap = _growth("default")  # glibc's raised threshold: the 4 MiB arrays come from the heap
    mapped = _growth("release")  # fixed at 1 MiB: each is its own mapping, unmapped when freed
    assert on_heap < 1, on_heap
    assert mapped >= 20, mapped


RUN_PATTERN = textwrap.dedent(
    """
    import ctypes
    import numpy as np
    from precision_sweep.emulator.allocator import release_large_arrays
    from precision_sweep.emulator.executor import execute
    from precision_sweep.emulator.plan import Plan

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mapped_growth():  # MiB of 5 x 4 MiB arrays that malloc mmapped (0 when from the heap)
        before = libc.mallinfo2().hblkhd
        blocks = [np.ones(1 << 20, dtype=np.float32) for _ in range(5)]
        return (libc.mallinfo2().hblkhd - before) / 2**20

    libc.mallopt(-3, 32 << 20)  # a threshold raised after the import (M_MMAP_THRESHOLD = 32 MiB)
    release_large_arrays.cache_clear()
    print(mapped_growth())
    execute(Plan(inputs={}, outputs=[]), {})
    print(mapped_growth())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_program_run_fixes_the_threshold():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    result = subprocess.run([sys.executable, "-c", RUN_PATTERN], capture_output=True, text=True, check=True, env=env)
    raised, after_run = map(float, result.stdout.split())
    assert raised < 1, raised  # 32 MiB threshold: the 4 MiB arrays come from the heap
    assert after_run >= 20, after_run  # the run set it back to 1 MiB: each array is its own mapping
