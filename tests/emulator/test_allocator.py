"""Freed memory stays in glibc's heap for the next arrays once the emulator runs (emulator/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

MALLINFO = textwrap.dedent(
    """
    import ctypes
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def churn():
        # MiB mmapped while 5 x 4 MiB arrays live, and MiB the heap keeps once they are freed
        before = libc.mallinfo2()
        blocks = [np.ones(1 << 20, dtype=np.float32) for _ in range(5)]
        mapped = (libc.mallinfo2().hblkhd - before.hblkhd) / 2**20
        del blocks
        kept = (libc.mallinfo2().arena - before.arena) / 2**20
        return mapped, kept
    """
)

PATTERN = MALLINFO + textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "reuse":
        from precision_sweep.emulator.allocator import reuse_freed_memory
        assert reuse_freed_memory()
    print(*churn())
    """
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> list[float]:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                            env=_clean_env() if env is None else env)
    return [float(v) for v in result.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_arrays_come_from_the_heap_and_their_freed_pages_stay_for_the_next_ones():
    mapped, kept = _run(PATTERN, "default")  # glibc's own: 4 MiB arrays are mmapped, unmapped on free
    assert mapped >= 20 and kept < 1, (mapped, kept)
    mapped, kept = _run(PATTERN, "reuse")  # the heap serves them and keeps their pages
    assert mapped < 1 and kept >= 16, (mapped, kept)


RUN_PATTERN = MALLINFO + textwrap.dedent(
    """
    from precision_sweep.emulator import allocator
    from precision_sweep.emulator.executor import execute
    from precision_sweep.emulator.plan import Plan

    libc.mallopt(allocator.M_MMAP_MAX, 65536)  # mmap allowed again after the import
    libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    libc.mallopt(allocator.M_TRIM_THRESHOLD, 128 << 10)
    allocator.reuse_freed_memory.cache_clear()
    print(*churn())
    execute(Plan(inputs={}, outputs=[]), {})
    print(*churn())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_program_run_sets_the_policy_again():
    mapped_before, _, mapped_after, kept_after = _run(RUN_PATTERN)
    assert mapped_before >= 20, mapped_before  # changed after the import: each array its own mapping
    assert mapped_after < 1 and kept_after >= 16, (mapped_after, kept_after)  # the run set it back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_malloc_setting_in_the_environment_wins():
    env = dict(_clean_env(), MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    mapped, kept = _run(PATTERN.replace("assert reuse_freed_memory()", "assert not reuse_freed_memory()"), "reuse",
                        env=env)
    assert mapped >= 20 and kept < 1, (mapped, kept)
