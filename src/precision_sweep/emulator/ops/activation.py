"""Activations (spec: ops/defs/iOS15/activation.py, iOS17/activation.py)."""

from __future__ import annotations

import math

import numpy as np

from precision_sweep.emulator.ops._clip_kernels import clip_float16, clip_float32, linear_float16, offset_clip_float32
from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.ops._threads import elementwise, in_place_row_blocks
from precision_sweep.emulator.registry import kernel

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _erf_array(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf

        return erf(x)
    except ImportError:  # pragma: no cover - scipy is a dependency of scikit-learn
        return _erf(x)


# relu and relu6 as clips: (lo, hi, ties_to_bounds), see clip_float32.
RELU_CLIP = (0, np.inf, True)
RELU6_CLIP = (0, 6, False)


@kernel("relu")
def relu(x, *, out=None):
    if x.dtype == np.float16:
        return clip_float16(x, *RELU_CLIP, out=out)
    if x.dtype == np.float32:
        return clip_float32(x, *RELU_CLIP, out=out)
    return np.maximum(x, 0, out=out)


@kernel("relu6")
def relu6(x, *, out=None):
    if x.dtype == np.float16:
        return clip_float16(x, *RELU6_CLIP, out=out)
    if x.dtype == np.float32:
        return clip_float32(x, *RELU6_CLIP, out=out)
    return np.clip(x, 0, 6, out=out)


@kernel("leaky_relu")
def leaky_relu(x, alpha=0.01):
    return np.where(x >= 0, x, x * alpha)


@kernel("elu")
def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x))


def _sigmoid_into(x: np.ndarray, out: np.ndarray) -> None:
    """``0.5 * (tanh(0.5 * x) + 1)`` into ``out``: numpy's float32 steps in numpy's order, in place."""
    np.multiply(x, np.float32(0.5), out=out)
    np.tanh(out, out=out)
    out += np.float32(1)
    out *= np.float32(0.5)


def _silu_into(x: np.ndarray, out: np.ndarray) -> None:
    _sigmoid_into(x, out)
    out *= x


def _silu_in_place(block: np.ndarray, scratch: np.ndarray) -> None:
    """SiLU of a float32 ``block``, in place: :func:`_silu_into`'s steps, its operand order included."""
    _sigmoid_into(block, scratch)
    np.multiply(scratch, block, out=block)


# The float32 activations a conv applies to its own output with its bias, in one pass (a lean
# run's conv that alone feeds one of them, program._fold_activations).
FOLDS_INTO_CONV = frozenset({"relu", "relu6", "silu"})


def offset_then_activation(planes: np.ndarray, offsets: np.ndarray | None, op_type: str) -> None:
    """``planes = op_type(planes + offsets[:, None])`` in place, for a C-contiguous float32
    ``planes`` (R, W) and per-plane ``offsets`` (R,) or None (nothing added), ``op_type`` one
    of ``FOLDS_INTO_CONV``: the bits of the add and then the activation's kernel. relu and
    relu6 in one compiled pass; SiLU block by block while each block is in cache."""
    clips = {"relu": RELU_CLIP, "relu6": RELU6_CLIP}
    if op_type in clips:
        offset_clip_float32(planes, offsets, *clips[op_type])
        return
    if op_type != "silu":
        raise ValueError(f"no float32 activation {op_type!r} to fold into a conv")
    column = None if offsets is None else offsets.reshape(-1, 1)

    def silu_block(rows: slice, scratch: np.ndarray) -> None:
        block = planes[rows]
        if column is not None:
            block += column[rows]
        _silu_in_place(block, scratch[: block.size].reshape(block.shape))

    in_place_row_blocks(silu_block, planes)


@kernel("sigmoid")
def sigmoid(x):
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return elementwise(_sigmoid_into, x)  # the same bits, fewer passes, every core
    return 0.5 * (np.tanh(0.5 * x) + 1)


@kernel("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.clip(alpha * x + beta, 0, 1)


@kernel("silu")
def silu(x):
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return elementwise(_silu_into, x)
    return x * sigmoid(x)


@kernel("softplus")
def softplus(x):
    return np.logaddexp(0, x)


@kernel("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return alpha.reshape(shape) * np.logaddexp(0, beta.reshape(shape) * x)


@kernel("softsign")
def softsign(x):
    return x / (1 + np.abs(x))


@kernel("tanh")
def tanh(x):
    return np.tanh(x)


@kernel("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    return alpha * np.tanh(beta * x)


@kernel("linear_activation")
def linear_activation(x, alpha, beta=0.0):
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        # fp16 values (a unit that keeps fp16 intermediates): the product and the sum each
        # rounded to fp16, as numpy's float16 arithmetic does (its compiled twin)
        return linear_float16(x, alpha, beta)
    return alpha * x + beta


@kernel("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """``x`` where ``x >= alpha``, else 0 (spec: iOS15 ``activation.py``, ``thresholded_relu``)."""
    return np.where(x >= alpha, x, 0)


@kernel("clamped_relu")
def clamped_relu(x, alpha, beta):
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@kernel("prelu")
def prelu(x, alpha):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.where(x >= 0, x, x * alpha.reshape(shape))


@kernel("gelu")
def gelu(x, mode="EXACT"):
    mode = str(mode)
    if mode == "TANH_APPROXIMATION":
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            return elementwise(_gelu_tanh_into, x)  # the same bits, fewer passes, every core
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * sigmoid(1.702 * x)
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return elementwise(_gelu_into, x)  # the same bits, fewer passes, every core
    return 0.5 * x * (1 + _erf_array(x / math.sqrt(2)).astype(x.dtype))


def _gelu_into(x: np.ndarray, out: np.ndarray) -> None:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` into ``out``: numpy's float32 steps, in place."""
    from scipy.special import erf

    np.divide(x, np.float32(math.sqrt(2)), out=out)
    erf(out, out=out)
    out += np.float32(1)
    out *= np.multiply(np.float32(0.5), x)


def _gelu_tanh_into(x: np.ndarray, out: np.ndarray) -> None:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`` into ``out``: numpy's
    float32 steps in the same order, in place, with ``x**3`` rounded once from its float64
    value (``cube_into``)."""
    cube_into(x, out)
    out *= np.float32(0.044715)
    out += x
    out *= np.float32(math.sqrt(2 / math.pi))
    np.tanh(out, out=out)
    out += np.float32(1)
    out *= np.multiply(np.float32(0.5), x)


def cube_into(x: np.ndarray, out: np.ndarray) -> None:
    """``x**3`` of float32 ``x`` into ``out``: the float64 product ``x * x * x`` (``x * x`` is
    exact in float64) rounded to float32. That is the correctly rounded cube, except in the
    rare case where rounding the exact cube to float64 lands it on a float32 tie. numpy's
    float32 ``power`` (which the spec's ``np.power(x, 3)`` calls) is no better defined: its
    bits differ by up to one unit in the last place between CPUs (on an Intel Xeon with
    AVX-512 FP16, numpy 2.4: in 10 % of normal samples), and it costs 43 ns per element there.
    Callers pass cache-sized blocks (``_threads.elementwise``)."""
    wide = np.multiply(x, x, dtype=np.float64)
    wide *= x
    np.copyto(out, wide, casting="same_kind")


@kernel("softmax")
def softmax(x, axis=-1, *, accumulator=FP32):
    shifted = x - np.max(x, axis=int(axis), keepdims=True)
    e = elementwise(_exp_into, shifted) if shifted.dtype == np.float32 else np.exp(shifted)
    return e / accumulator.sum(e, (int(axis),), keepdims=True)


def _exp_into(x: np.ndarray, out: np.ndarray) -> None:
    np.exp(x, out=out)
