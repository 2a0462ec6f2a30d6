"""fp16 rounding inside compiled loops: the CPU's own conversion instructions.

:func:`round_half` is ``float(np.float16(x))`` for one float32 inside a numba loop: LLVM's
``fptrunc`` to half then ``fpext`` back, which x86 CPUs with F16C run as ``vcvtps2ph`` /
``vcvtph2ps`` (IEEE round to nearest even, subnormals kept, overflow to inf), vectorized with
the loop around it. :func:`round_half_away` rounds ties away from zero instead (the M5 model's
MAC rounding): it nudges an exact tie by its own excess before the even rounding. Both are
tested bit for bit against numpy (tests/emulator/test_accumulate.py).
"""

from __future__ import annotations

# How numba builds the kernels (OpenMP's passive waiting, the vector width): set before any
# kernel compiles; every compiled-kernel module imports this one first.
from precision_sweep.emulator.ops import _compile_target  # noqa: F401

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def round_half(typingctx, value):
    """The float32 ``value`` rounded to the nearest float16 (ties to even), as float32."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _float_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, inline="always")
def round_half_away(value):
    """The float32 ``value`` rounded to the nearest float16, ties away from zero, as float32.

    An exact tie is moved one float32 ulp away from zero before the even rounding, which then
    goes away from zero; anything else rounds as :func:`round_half` does (a float32 one ulp
    off a tie cannot be a tie for fp16 itself, since fp16 ties lie on a coarser grid).
    """
    nearest = round_half(value)
    bits = _float_bits(value)
    nudged = _bits_float(bits + np.uint32(1))
    other = round_half(nudged)
    # A tie: the value sits exactly halfway, so nudging it one ulp outward changes the result
    # to the neighbour farther from zero.
    outward = abs(other) > abs(nearest)
    halfway = abs(value - nearest) == abs(other - value)
    return other if (outward and halfway) else nearest
