"""Accumulators: every sum an accumulating kernel computes goes through one of these.

The executor hands each accumulating op (``numerics.ACCUMULATING_OPS``) an
:class:`Accumulator` built from the :class:`~precision_sweep.emulator.numerics.Accumulation`
of the unit the op is placed on (fp32 for fp32-typed ops). Kernels receive float32 operands
(fp16 values, exactly upcast) and never sum on their own.

* ``fp32``: BLAS and numpy sums in float32; the executor rounds the result at the op's output;
* ``fp16``: one fp16 running sum along the reduced axis (compiled in ``_accumulate_kernels``);
* ``tiles``: the ANE's 4-term fp16 tiles feeding a wide fp32 accumulator, with its MAC
  output ceiling and, on M1-class devices, subnormal outputs of MAC ops flushed to +0. MAC
  operands arrive already flushed: the executor flushes them as it upcasts the inputs of MAC
  ops placed on such a device (``numerics.MAC_OPS``).

Results of the fp16 kinds are already rounded to fp16 (float32 arrays holding fp16 values).
Their operands must hold fp16 values too: products of two fp16 values are exact in float32,
which is what lets the compiled kernels fuse multiply and add and stay bit-identical to the
plain twins on every machine.
The plain numpy twins (``*_reference``) state each model in a few lines; the tests check the
compiled kernels against them bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precision_sweep.emulator.numerics import FP32_ACCUMULATION, Accumulation
from precision_sweep.emulator.ops import _accumulate_kernels as compiled
from precision_sweep.emulator.ops import _threads
from precision_sweep.emulator.ops._casts import float16_to_float32, float32_to_float16, memory_order, round_float16_in_float32

# Smallest normal fp16 magnitude: below it a value is subnormal.
FP16_TINY = np.float32(2.0**-14)
# Bound slack for skipping partial-sum tracking: in-tile and port roundings grow a sum by at
# most (1 + 2**-11) per rounding, and float32 additions by far less.
_BOUND_SLACK = 1.01


def round_half_away_reference(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to fp16 with ties away from zero (plain twin of ``round_half_away``)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        nearest = x.astype(np.float16).astype(np.float32)
        outward = np.nextafter(x, np.copysign(np.float32(np.inf), x)).astype(np.float16).astype(np.float32)
        tie = (np.abs(outward) > np.abs(nearest)) & (np.abs(x - nearest) == np.abs(outward - x))
    return np.where(tie, outward, nearest)


def _rounder(away: bool):
    if away:
        return round_half_away_reference
    return lambda v: np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


@dataclass(frozen=True)
class Accumulator:
    """How one op sums (see the module docstring); ``spec`` is the unit's accumulation model."""

    spec: Accumulation = FP32_ACCUMULATION

    @property
    def rounds_to_fp16(self) -> bool:
        return self.spec.kind != "fp32"

    def operand(self, x) -> np.ndarray:
        """A MAC operand as this model reads it: float32, fp16 values exactly, and with the
        unit's ``flush_subnormals`` fp16 subnormals and -0 as +0 (the executor's upcast of MAC
        operands, for kernels that read fp16 inputs themselves: ``numerics.READS_FP16_OPERANDS``)."""
        x = np.asarray(x)
        if x.dtype == np.float16:
            return float16_to_float32(x, self.spec.flush_subnormals)
        return x.astype(np.float32, copy=False)

    # -- matmul: products of two operands, summed over the last axis of a / first of b ----

    def matmul(self, a: np.ndarray, b: np.ndarray, saturate: bool = True, b_abs_max: np.ndarray | None = None) -> np.ndarray:
        """``a @ b`` (np.matmul broadcasting, operands of rank >= 1) in this model.

        ``saturate``: the result leaves through the ANE's MAC output port, whose ceiling
        applies (matmul, linear and convs with two or more terms per output). ``b_abs_max``:
        an upper bound of ``|b|`` along each row of ``b`` (shaped ``b.shape[:-1]``), when the
        caller has a cheaper one than a scan of ``b`` (a conv: its input's channels); NaN may
        be ignored.
        """
        if a.ndim == 1 or b.ndim == 1:
            a2 = a[None, :] if a.ndim == 1 else a
            b2 = b[:, None] if b.ndim == 1 else b
            out = self.matmul(a2, b2, saturate)
            if a.ndim == 1:
                out = out[..., 0, :]
            if b.ndim == 1:
                out = out[..., 0]
            return out
        kind = self.spec.kind
        if kind == "fp32":
            if a.dtype.kind != "f" or b.dtype.kind != "f":
                return np.matmul(a, b)
            return _threads.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32))
        a = np.asarray(a, np.float32)
        b = np.asarray(b, np.float32)
        if kind == "fp16":
            return compiled.fp16_matmul(a, b)
        ceiling = self.spec.ceiling if (saturate and self.spec.ceiling) else 0.0
        track = bool(ceiling) and not _bounded(a, b, ceiling, b_abs_max)
        return compiled.tiles_matmul(a, b, self.spec.tile, self.spec.ties == "away", ceiling,
                                     self.spec.flush_subnormals, track)

    # -- sums of one operand over some axes (reductions, means, norms, softmax) ----------

    def sum(self, x: np.ndarray, axes, keepdims: bool = False, scale: float = 1.0) -> np.ndarray:
        """``sum(x, axes) * scale``; the fp16 kinds apply ``scale`` before rounding (so a mean
        overflows only when the mean does). No MAC ceiling: reductions hold the fp16 range."""
        x = np.asarray(x)
        axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % max(x.ndim, 1) for a in np.atleast_1d(axes))
        if self.spec.kind == "fp32":
            total = np.sum(x, axis=axes, keepdims=keepdims)
            return total * np.asarray(scale, dtype=total.dtype if total.dtype.kind == "f" else np.float32) if scale != 1.0 else total
        x = x.astype(np.float32, copy=False)
        keep = [a for a in range(x.ndim) if a not in axes]
        length = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        model = (self.spec.kind == "tiles", self.spec.tile, self.spec.ties == "away", scale)
        order = memory_order(x)
        in_order = x.flags.c_contiguous or list(axes) == sorted(axes)  # the order the sum takes them
        if keep and order is not None and in_order and list(order) == keep + sorted(axes):
            # the summed axes lie last in memory (C-contiguous, or a transpose op's view, e.g.
            # a squeeze-excite mean over NHWC's H and W): summed in place
            total = compiled.sum_last(np.transpose(x, order).reshape(-1, length), *model)
        else:
            total = compiled.sum_rows(np.transpose(x, list(axes) + keep).reshape(length, -1), *model)
        total = total.reshape([x.shape[a] for a in keep])
        if keepdims:
            total = total.reshape([1 if a in axes else n for a, n in enumerate(x.shape)])
        return total

    def sum_terms(self, terms, saturate: bool = False) -> np.ndarray:
        """The sum of same-shape arrays, in order (pooling windows, conv taps)."""
        if self.spec.kind == "fp32":
            terms = [np.asarray(t) for t in terms]
            total = np.zeros(np.broadcast_shapes(*(t.shape for t in terms)), np.result_type(*terms))
            for t in terms:  # from +0, in order, as the compiled kernels sum
                total += t
            return total
        terms = [np.asarray(t, dtype=np.float32) for t in terms]
        stacked = np.stack(terms).reshape(len(terms), -1)
        if self.spec.kind == "fp16":
            return compiled.sum_rows(stacked, False).reshape(terms[0].shape)
        if saturate:  # MAC terms (N-d depthwise conv): the port's ceiling and flush
            total = tiles_sum_reference(stacked, self.spec.tile, self.spec.ties == "away",
                                        ceiling=self.spec.ceiling or 0.0, flush=self.spec.flush_subnormals)
        else:
            total = compiled.sum_rows(stacked, True, self.spec.tile, self.spec.ties == "away")
        return total.reshape(terms[0].shape)

    def cumsum(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Running sums along ``axis``: each prefix is the model's sum of its terms, rounded."""
        x = np.asarray(x)
        if self.spec.kind == "fp32":
            return np.cumsum(x, axis=axis, dtype=x.dtype)
        x = x.astype(np.float32, copy=False)
        moved = np.moveaxis(x, axis, 0)
        out = np.empty_like(moved)
        if self.spec.kind == "fp16":
            running = np.zeros(moved.shape[1:], dtype=np.float32)
            for i in range(moved.shape[0]):
                running = round_float16_in_float32(running + moved[i])
                out[i] = running
        else:  # the wide accumulator holds exact-ish fp32 prefixes; each output is rounded
            rnd = _rounder(self.spec.ties == "away")
            running = np.zeros(moved.shape[1:], dtype=np.float32)
            for i in range(moved.shape[0]):
                running = running + moved[i]
                out[i] = rnd(running)
        return np.moveaxis(out, 0, axis)

    def add_bias(self, y: np.ndarray, bias, channel_axis: int | None = None, as_float16: bool = False) -> np.ndarray:
        """``y + bias``: in fp32 for the fp32 kind, in the fp16 datapath (rounded to fp16)
        otherwise. ``channel_axis=1`` adds it per channel of a channels-first ``y``; ``None``
        over the last axis. With ``as_float16`` the fp16 kinds return the float16 array (the
        op's output as the executor stores it, in the same pass), also when ``bias`` is None
        (``y`` may then be a per-channel view, see ``compiled.add_bias_rounded``)."""
        as_float16 = as_float16 and self.spec.kind != "fp32"
        if bias is None and not as_float16:
            return y
        if self.spec.kind == "fp32":
            bias = np.asarray(bias, dtype=np.float32)
            if channel_axis is not None:
                bias = bias.reshape((-1,) + (1,) * (y.ndim - 1 - channel_axis % y.ndim))
            return y + bias
        if bias is None and channel_axis is None:
            return float32_to_float16(y)
        return compiled.add_bias_rounded(y, bias, 1 if channel_axis is not None else None, as_float16)


FP32 = Accumulator(FP32_ACCUMULATION)


def flush_subnormals(x: np.ndarray) -> np.ndarray:
    """fp16-subnormal values (0 < |x| < 2**-14) become +0, and -0 becomes +0."""
    return np.where(np.abs(x) < FP16_TINY, np.float32(0.0), x).astype(np.float32, copy=False)


def _bounded(a: np.ndarray, b: np.ndarray, ceiling: float, b_max: np.ndarray | None = None) -> bool:
    """True when no partial sum of ``a @ b`` can reach ``ceiling`` (so no tracking is needed):
    every partial is at most sum_k |a_k| * max_j |b_kj| (up to the rounding slack). ``b_max``:
    that max along the rows of ``b``, or any upper bound of it (computed when not given)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if b_max is None:
            b_max = compiled.abs_max_last_axis(b)  # (..., K)
        if not np.all(np.isfinite(b_max)):
            return False
        if a.ndim == 2:  # one pass over a: no |a| copy (a conv's or linear's weights)
            return compiled.abs_row_bound(a, b_max) * _BOUND_SLACK < ceiling
        if not np.all(np.isfinite(a)):
            return False
        bound = np.matmul(np.abs(a), b_max[..., :, None])[..., 0]
    return float(np.max(bound, initial=0.0)) * _BOUND_SLACK < ceiling


# ---------------------------------------------------------------------------------------
# Plain twins: the models in numpy, term by term (tests compare the compiled kernels).


def _track_partials(high, low, acc):
    """The largest and smallest partial sums so far, with ``acc``'s: a NaN partial is skipped (the
    compiled kernels' ``max``/``min``), so a partial that reached the ceiling still saturates the
    output when a later term (``inf * 0``, ``inf - inf``) makes the sum NaN."""
    return np.fmax(high, acc), np.fmin(low, acc)


def _port_reference(acc, high, low, ceiling: float, flush: bool, away: bool):
    out = _rounder(away)(acc)
    if ceiling:
        over = (out >= ceiling) | (high >= ceiling)
        under = ~over & ((out <= -ceiling) | (low <= -ceiling))
        out = np.where(over, np.float32(np.inf), np.where(under, np.float32(-np.inf), out))
    if flush:
        out = flush_subnormals(out)
    return out


def tiles_matmul_reference(a, b, tile: int = 4, away: bool = False, ceiling: float = 0.0, flush: bool = False):
    """Plain twin of ``compiled.tiles_matmul`` (tracked: the ceiling checks every partial)."""
    rnd = _rounder(False)
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    acc = np.zeros(shape, np.float32)
    high = np.zeros(shape, np.float32)
    low = np.zeros(shape, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for t0 in range(0, a.shape[-1], tile):
            s = a[..., :, t0 : t0 + 1] * b[..., t0 : t0 + 1, :]
            for t in range(t0 + 1, min(a.shape[-1], t0 + tile)):
                s = rnd(s + a[..., :, t : t + 1] * b[..., t : t + 1, :])
            acc = acc + rnd(s)
            high, low = _track_partials(high, low, acc)
        return _port_reference(acc, high, low, ceiling, flush, away)


def fp16_matmul_reference(a, b):
    """Plain twin of ``compiled.fp16_matmul``: one fp16 running sum per output."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    acc = np.zeros(shape, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(a.shape[-1]):
            acc = (acc + a[..., :, t : t + 1] * b[..., t : t + 1, :]).astype(np.float16).astype(np.float32)
    return acc


def tiles_sum_reference(rows, tile: int = 4, away: bool = False, scale: float = 1.0, ceiling: float = 0.0,
                        flush: bool = False):
    """Plain twin of ``compiled.sum_rows`` in the tiles model (sum over the first axis of ``rows``), and of
    the compiled depthwise conv's tiles when given the port's ``ceiling`` and ``flush``."""
    rnd = _rounder(False)
    rows = np.asarray(rows, np.float32)
    acc = np.zeros(rows.shape[1:], np.float32)
    high = np.zeros_like(acc)
    low = np.zeros_like(acc)
    with np.errstate(over="ignore", invalid="ignore"):
        for t0 in range(0, rows.shape[0], tile):
            s = rows[t0]
            for t in range(t0 + 1, min(rows.shape[0], t0 + tile)):
                s = rnd(s + rows[t])
            acc = acc + rnd(s)
            high, low = _track_partials(high, low, acc)
        return _port_reference(acc * np.float32(scale), high, low, ceiling, flush, away)


def fp16_sum_reference(rows, scale: float = 1.0):
    """Plain twin of ``compiled.sum_rows`` in the fp16 model."""
    rows = np.asarray(rows, np.float32)
    acc = np.zeros(rows.shape[1:], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(rows.shape[0]):
            acc = (acc + rows[t]).astype(np.float16).astype(np.float32)
        return (acc * np.float32(scale)).astype(np.float16).astype(np.float32)
