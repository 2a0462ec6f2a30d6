"""Compute-unit numerics profiles: how fp16 ops are computed, chosen by ``compute_units``.

These are emulations of the documented behaviour classes of Apple's compute units, not
bit-exact copies of any device:

``cpu_only``
    fp16 ops are computed in fp32 and rounded to fp16 at each op's output.
``cpu_and_gpu``
    fp16 storage: elementwise math runs on float16 values, while matmul, conv and reductions
    accumulate in fp32 and round their result to fp16.
``cpu_and_ne`` and ``all``
    fp16 storage and fp16 accumulation: matmul, conv and reductions add fp16 partial sums
    (blocks of the reduced axis are summed in fp32 then rounded, and the running total is
    kept in float16), which is how a Neural Engine style fp16 MAC array loses precision.

fp32 ops are computed in fp32 under every profile.

Ops that only move or select values (:data:`VALUE_EXACT_OPS`: reshapes, slices, concat, pad,
relu, relu6, clip, ...) take their fp16 inputs as they are under every profile: each output
element is an input element or an fp16 constant, so computing them in fp32 and rounding would
give the same bits, at the cost of two casts. ``add`` (:data:`SINGLE_ROUNDING_OPS`) takes
them as they are too: its kernel rounds the float32 sum to float16 once, which is what both
computing in fp32 and float16 arithmetic give.
"""

from __future__ import annotations

from dataclasses import dataclass

# Op types whose inner loop is a long sum: the place where accumulation precision matters.
ACCUMULATING_OPS = frozenset(
    {
        "conv",
        "conv_transpose",
        "matmul",
        "linear",
        "einsum",
        "reduce_sum",
        "reduce_mean",
        "reduce_sum_square",
        "reduce_l2_norm",
        "reduce_l1_norm",
        "reduce_log_sum",
        "reduce_log_sum_exp",
        "avg_pool",
        "l2_pool",
        "batch_norm",
        "instance_norm",
        "layer_norm",
        "l2_norm",
        "softmax",
        "scaled_dot_product_attention",
    }
)


# Op types whose every output element is one of the input elements or a constant of the
# program's dtype: float16 in, the same float16 bits out, whatever the profile.
VALUE_EXACT_OPS = frozenset(
    {
        "reshape",
        "reshape_like",
        "transpose",
        "squeeze",
        "expand_dims",
        "slice_by_index",
        "slice_by_size",
        "depth_to_space",
        "space_to_depth",
        "pixel_shuffle",
        "pixel_unshuffle",
        "flatten2d",
        "reverse",
        "concat",
        "stack",
        "split",
        "tile",
        "pad",
        "identity",
        "relu",
        "relu6",
        "clip",
    }
)


# Op types whose kernel, given float16 operands, returns the float32 result rounded once to
# float16 (or the float32 result, which the executor rounds): the same bits as upcasting.
SINGLE_ROUNDING_OPS = frozenset({"add"})


@dataclass(frozen=True)
class Profile:
    """How one compute-unit class treats an op whose declared output dtype is fp16."""

    name: str
    upcast_elementwise: bool
    upcast_accumulating: bool
    fp16_accumulation: bool
    # Length of the blocks that are summed before rounding to fp16 (fp16 accumulation only).
    accumulation_block: int = 8


PROFILES: dict[str, Profile] = {
    "cpu_only": Profile("cpu_only", True, True, False),
    "cpu_and_gpu": Profile("cpu_and_gpu", False, True, False),
    "cpu_and_ne": Profile("cpu_and_ne", False, False, True),
    "all": Profile("all", False, False, True),
}


def get_profile(compute_units: str) -> Profile:
    """Return the profile for a ``compute_units`` name (case-insensitive)."""
    key = str(compute_units).lower()
    if key not in PROFILES:
        raise ValueError(
            f"unknown compute_units {compute_units!r}; choose one of {', '.join(PROFILES)}"
        )
    return PROFILES[key]
