"""Apple Neural Engine generations as data: which MIL ops each runs, and its shape limits.

Source: the reverse-engineered account of the engine in GitHub ``sbryngelson/ane-guide``,
``appendices/a-op-device-matrix.md`` (the op-by-device matrix, M1, M2 and M5 columns measured
on silicon, the M3 and M4 columns predicted from decompiled tables) and its per-chip numeric
limits table. The guide labels its columns M1 (H13, A13), M2 (H14, A14), M3 (A15) and M4/M5
(A16, A17); we name generations after those columns. Where the guide's numerics chapter says
"M1/A14" (the width-slice gain) it means the M1 and M2 columns here.

This module only states facts and their sources; :mod:`precision_sweep.emulator.placement`
decides where ops run and :mod:`precision_sweep.emulator.numerics` how each unit computes.
"""

from __future__ import annotations

from dataclasses import dataclass

GUIDE = "ane-guide (github.com/sbryngelson/ane-guide)"
MATRIX = f"{GUIDE}, appendices/a-op-device-matrix.md"


@dataclass(frozen=True)
class Generation:
    """One Neural Engine generation: its place in time and the limits its compiler enforces."""

    name: str
    chips: str
    rank: int  # ordering of generations: an op native "from m2" runs on ranks >= m2's
    measured: str  # what the guide measured on this generation's silicon
    max_tensor_width_height: int  # the matrix's "max tensor W / H"
    max_conv_kernel: int  # the conv row's note: kernels up to this size per spatial axis
    max_pool_window: int  # the avg_pool row's note


GENERATIONS: dict[str, Generation] = {
    "m1": Generation(
        "m1", "M1 family (the guide's H13 column, listed with A13)", 1,
        "numerics chapter and op matrix measured on an M1", 16384, 29, 29,
    ),
    "m2": Generation(
        "m2", "M2 family (the guide's H14 column, listed with A14)", 2,
        "op matrix and the width-slice saturation measured; MAC numerics not", 16384, 32, 31,
    ),
    "m5": Generation(
        "m5", "M4/M5 family (H16/H17s, A16/A17)", 5,
        "op matrix (M5 column) and the accumulator's denormals and tie rounding measured on an M5",
        65536, 32, 31,
    ),
}

DEFAULT_DEVICE = "m1"

# Max tensor channels and batch: 65536 on every generation in the matrix's limits table.
MAX_TENSOR_CHANNELS = 65536
MAX_TENSOR_BATCH = 65536

# Status of each MIL op on the engine: "m1"/"m2"/"m3" = native from that generation on,
# "bridge" = reachable only through a decomposition or software fallback (placed off the
# engine here, except where the matrix says the op folds into its neighbours' descriptors),
# "none" = no path on any generation. Ops the matrix does not list are placed off the engine.
NATIVE_M1 = """
conv conv_transpose linear linear_activation matmul einsum avg_pool max_pool l2_pool
scaled_dot_product_attention batch_norm layer_norm instance_norm l2_norm local_response_norm
abs add sub mul real_div floor_div pow square sqrt rsqrt inverse maximum minimum cumsum
equal not_equal greater greater_equal less less_equal logical_not select
relu relu6 leaky_relu prelu clamped_relu thresholded_relu threshold clip elu sigmoid sigmoid_hard
tanh scaled_tanh gelu silu softmax softplus softplus_parametric softsign erf exp exp2 log sign
ceil floor round atan
reduce_sum reduce_mean reduce_max reduce_min reduce_sum_square reduce_l1_norm reduce_l2_norm
reduce_log_sum reduce_log_sum_exp reduce_argmax
reshape reshape_like expand_dims squeeze flatten2d transpose concat split stack pad slice_by_size
slice_update reverse tile gather gather_along_axis depth_to_space space_to_depth pixel_shuffle
pixel_unshuffle space_to_batch batch_to_space identity fill fill_like crop cast quantize dequantize
""".split()
NATIVE_FROM_M2 = """
resize resize_bilinear resize_nearest_neighbor upsample_bilinear upsample_nearest_neighbor
crop_resize resample affine topk argsort gather_nd
""".split()
NATIVE_FROM_M3 = "sin cos reduce_argmin random_uniform".split()
# Bridge ops that fold into a neighbour's descriptor inside a graph, so they stay on the engine.
FOLDS_ON_ENGINE = ("slice_by_index",)
BRIDGE = """
slice_by_index cond while_loop range_1d non_maximum_suppression
""".split()
NO_PATH = """
mod logical_and logical_or logical_xor reduce_prod reverse_sequence band_part non_zero one_hot
shape sliding_windows scatter scatter_along_axis scatter_nd gru lstm rnn tan asin acos atanh
asinh acosh sinh cosh random_bernoulli random_categorical random_normal list_gather list_length
list_read list_scatter list_write make_list constexpr_cast
""".split()

ANE_STATUS: dict[str, str] = {
    **{op: "m1" for op in NATIVE_M1},
    **{op: "m2" for op in NATIVE_FROM_M2},
    **{op: "m3" for op in NATIVE_FROM_M3},
    **{op: "bridge" for op in BRIDGE},
    **{op: "none" for op in NO_PATH},
}

_RANK = {"m1": 1, "m2": 2, "m3": 3}


def ane_runs(op_type: str, generation: Generation) -> tuple[bool, str]:
    """Whether the matrix gives ``op_type`` an engine path on ``generation``, and why."""
    status = ANE_STATUS.get(op_type)
    if status is None:
        return False, f"{op_type} is not in the op-device matrix"
    if status in _RANK:
        if generation.rank >= _RANK[status]:
            return True, f"native on {generation.name}"
        return False, f"native only from {status} on (op-device matrix)"
    if status == "bridge":
        if op_type in FOLDS_ON_ENGINE:
            return True, "folds into the descriptor on the engine (op-device matrix: bridge)"
        return False, "bridge only: decomposed or run off the engine (op-device matrix)"
    return False, "no engine path on any generation (op-device matrix)"


def get_generation(name: str) -> Generation:
    """The generation called ``name`` (see :data:`GENERATIONS`)."""
    key = str(name).lower()
    if key not in GENERATIONS:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(GENERATIONS)}")
    return GENERATIONS[key]
