"""How the compiled kernels are built for the CPU (ops/_compile_target.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import llvmlite.binding as llvm
import pytest

from precision_sweep.emulator.ops._compile_target import kernel_cpu_features

HOST_HAS_FP16 = "+avx512fp16" in llvm.get_host_cpu_features().flatten().split(",")

# What a fresh process that loads the emulator's kernels builds them for, and whether it left
# anything in the environment its children inherit.
PROBE = """
import json, os, re
import numpy as np
from precision_sweep.emulator.ops import _accumulate_kernels  # noqa: F401  (as the executor loads them)
from numba import njit
from numba.core import config
from precision_sweep.emulator.ops._half import round_half
@njit(fastmath={"contract"})  # the fp16 running sum's step, no disk cache
def chain(acc, row, w):
    for j in range(row.shape[0]):
        acc[j] = round_half(acc[j] + w * row[j])
chain(np.zeros(256, np.float32), np.ones(256, np.float32), np.float32(0.5))
asm = next(iter(chain.inspect_asm().values()))
print(json.dumps({"features": config.CPU_FEATURES, "omp": os.environ.get("OMP_WAIT_POLICY"),
                  "env": os.environ.get("NUMBA_CPU_FEATURES"), "zmm": len(re.findall("zmm", asm))}))
"""


def _probe(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU") and k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", PROBE], env={**environment, **env}, capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_only_cpus_with_avx512_fp16_drop_the_256_bit_preference():
    assert kernel_cpu_features("+avx2,+avx512f,-avx512fp16,+f16c") is None
    assert kernel_cpu_features("+avx2,+f16c") is None
    wide = kernel_cpu_features("+avx2,+avx512f,+avx512fp16,+prefer-256-bit,+f16c")
    assert wide.split(",") == ["+avx2", "+avx512f", "+avx512fp16", "+f16c", "-prefer-256-bit"]


def test_a_process_builds_its_kernels_for_its_own_cpu_and_leaves_the_environment_alone():
    seen = _probe()
    assert seen["omp"] == "PASSIVE"
    assert seen["env"] is None  # children (a SLURM job on another node) decide for their CPU
    if HOST_HAS_FP16:
        assert seen["features"] == kernel_cpu_features(llvm.get_host_cpu_features().flatten())
        assert seen["zmm"] > 0
    else:
        assert seen["features"] is None


def test_the_users_numba_cpu_settings_win():
    mine = "+avx2,+f16c,+fma,+sse4.2"
    seen = _probe(NUMBA_CPU_FEATURES=mine, NUMBA_CPU_NAME="haswell", OMP_WAIT_POLICY="ACTIVE")
    assert seen["features"] == mine
    assert seen["omp"] == "ACTIVE"
    assert seen["zmm"] == 0


@pytest.mark.skipif(not HOST_HAS_FP16, reason="the wide vectors apply to CPUs with AVX512-FP16 only")
def test_without_the_setting_llvm_keeps_256_bit_vectors_here():
    # the reason for the setting: the host's own tuning builds the same loop with ymm only
    seen = _probe(NUMBA_CPU_FEATURES=llvm.get_host_cpu_features().flatten(), NUMBA_CPU_NAME=llvm.get_host_cpu_name())
    assert seen["zmm"] == 0
