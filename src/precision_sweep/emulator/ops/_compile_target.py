"""How numba builds the compiled kernels for this CPU: OpenMP's waiting, and the vector width.

Imported by ``_half`` (which every compiled-kernel module imports first), before any kernel
compiles or loads from numba's cache:

* numba's parallel kernels run on OpenMP threads that by default spin after each kernel, taking
  the cores from the BLAS thread pool (``ops/_threads.py``): ResNet50 ran 1.35x slower. Passive
  waiting must be asked for before OpenMP starts; a value the user set is kept.
* LLVM tunes Intel's AVX-512 CPUs to prefer 256-bit vectors. The fp16 kernels are bound by the
  fp16 conversions (``vcvtps2ph``/``vcvtph2ps``), which on CPUs with AVX512-FP16 (Sapphire
  Rapids and later) round 16 values almost as fast as 8: there the kernels are built with 512-bit
  vectors (:data:`WIDE_VECTORS_WITH`). On an Emerald Rapids Xeon, a rounding loop over data in
  L1 went from 15.2 to 25.8 G values/s on one core, the fp16 running-sum inner
  loop went from 12.8 to 15.7 GMAC/s on one core, and whole models (``benchmarks/emulator_ab.py``,
  3 alternating pairs, batch 32) took 0.82-0.95x the time for FP16 ``cpu_only`` (ViT 224² 0.82,
  EfficientNetB0 96² 0.91, MobileNetV2 224² 0.95) and ``cpu_and_ne`` (ResNet50 96² 0.83,
  MobileNetV2 224² 0.86); ``cpu_and_gpu`` (BLAS sums) 1.00. The width changes no
  bits: each lane computes what it did (the kernel tests compare against the plain numpy
  twins). The setting is numba's ``CPU_FEATURES`` in this process only, never an environment
  variable, so a job started on another machine (a SLURM node) builds for its own CPU.
  A user's ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES`` wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import llvmlite.binding as llvm  # noqa: E402
from numba.core import config  # noqa: E402

# Host CPU features under which the kernels use 512-bit vectors (see the module docstring).
WIDE_VECTORS_WITH = "+avx512fp16"
PREFER_256_BIT = "prefer-256-bit"


def kernel_cpu_features(host_features: str) -> str | None:
    """The features numba should build for, given the host's (``"+avx2,-avx512fp16,..."``):
    the host's with LLVM's 256-bit preference turned off when the CPU has AVX512-FP16, else
    None (numba's default: the host as LLVM tunes it)."""
    features = host_features.split(",")
    if WIDE_VECTORS_WITH not in features:
        return None
    return ",".join([f for f in features if f.lstrip("+-") != PREFER_256_BIT] + ["-" + PREFER_256_BIT])


def _configure() -> None:
    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return  # the user's choice (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)
    features = kernel_cpu_features(llvm.get_host_cpu_features().flatten())
    if features is not None:
        config.CPU_FEATURES = features


_configure()
