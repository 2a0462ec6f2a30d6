"""Numerics models: how each compute unit computes an fp16 program, as data, with sources.

Every accuracy delta precision-sweep reports on Linux comes from these models. They are
emulations of *measured* behaviour, not Apple's implementation: each behaviour below names
its source (document, section, device measured), how the emulator realises it, and what is
not modelled. Where sources are silent or disagree, the model makes a choice and says so.

* :data:`BEHAVIOURS` is the table (docs/numerics.md's table is generated from it, and a
  test keeps the two equal);
* :data:`PROBES` are the published measurements the tests replay, with the value the
  emulator gives and whether it reproduces the source;
* :func:`unit_models` turns ``compute_units`` and ``device`` into the models of the units a
  program may run on; :mod:`.placement` decides which op runs on which unit.

fp32-typed ops are computed in fp32 under every model (the ANE runs none: see placement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from precision_sweep.emulator.devices import DEFAULT_DEVICE, GUIDE, MATRIX, Generation, get_generation

# Logged with every run (param ``numerics_version``): bump it when a model's numbers change.
NUMERICS_VERSION = "2"

NUMERICS_CHAPTER = f"{GUIDE}, part-1-machine/03-numerics.md"
PITFALLS_CHAPTER = f"{GUIDE}, part-5-practice/19-pitfalls-and-limits.md"
COREMLTOOLS_ISSUE = "github.com/apple/coremltools/issues/{}"

COMPUTE_UNITS = ("cpu_only", "cpu_and_gpu", "cpu_and_ne", "all")

# The ops whose kernels sum many terms: the one place that says which ops accumulate. Their
# kernels take an ``accumulator`` (see ops/_accumulate.py) and sum only through it; the
# registry refuses a kernel that disagrees with this set.
ACCUMULATING_OPS = frozenset(
    {
        "conv", "conv_transpose", "matmul", "linear", "einsum",
        "reduce_sum", "reduce_mean", "reduce_sum_square", "reduce_l2_norm", "reduce_l1_norm",
        "reduce_log_sum", "reduce_log_sum_exp", "avg_pool", "l2_pool", "instance_norm",
        "layer_norm", "l2_norm", "local_response_norm", "softmax", "scaled_dot_product_attention",
        "cumsum",
    }
)
# Accumulating ops whose result leaves through the ANE's multiply-accumulate output port
# (and its 2**15 ceiling); reductions take a dedicated path that holds the fp16 range.
MAC_OPS = frozenset({"conv", "conv_transpose", "matmul", "linear", "einsum"})

# Op types whose every output element is one of the input elements or a constant of the
# program's dtype: float16 in, the same float16 bits out, whatever the model.
VALUE_EXACT_OPS = frozenset(
    {
        "reshape", "reshape_like", "transpose", "squeeze", "expand_dims", "slice_by_index",
        "slice_by_size", "depth_to_space", "space_to_depth", "pixel_shuffle", "pixel_unshuffle",
        "flatten2d", "reverse", "concat", "stack", "split", "tile", "pad", "identity", "relu",
        "relu6", "clip",
    }
)
# Op types whose kernel is one IEEE operation on two operands. On float16 operands numpy's own
# float16 loop computes it in float32 and rounds once, which is exact for these (float32 has
# at least 2 * 11 + 2 significant bits): so a unit that rounds every intermediate to fp16
# gets the same bits from fp32 copies, and the executor gives it those (one compiled upcast
# instead of numpy's slow float16 loop).
ONE_OPERATION_OPS = frozenset({"real_div", "maximum", "minimum"})
# Op types whose every output element is a function of the same element of their one variable
# input ``x`` and of scalar constants. On float16 values such a step maps each of the 65,536
# float16 bit patterns to one float16 result, whatever the unit model does in between; the
# executor tabulates that map once per step signature, by running the step itself on every
# pattern, and applies it by lookup (the same bits, one gather instead of numpy's float16
# arithmetic or three casts around a float32 kernel).
TABULATED_OPS = frozenset(
    {
        "leaky_relu", "elu", "sigmoid", "sigmoid_hard", "silu", "softplus", "softsign", "tanh",
        "scaled_tanh", "linear_activation", "thresholded_relu", "clamped_relu", "gelu",
        "abs", "acos", "asin", "atan", "atanh", "ceil", "cos", "cosh", "exp", "exp2", "floor",
        "round", "sign", "sin", "sinh", "sqrt", "square", "tan", "erf", "inverse", "log",
        "rsqrt", "threshold",
    }
)
# Op types whose kernel, given float16 operands, returns the float32 result rounded once to
# float16: the same bits as computing from the upcast values.
SINGLE_ROUNDING_OPS = frozenset({"add", "sub", "mul"})

# Accumulating op types whose kernel takes its fp16 variable inputs as stored and reads them
# as the accumulator reads MAC operands (``Accumulator.operand``: exact float32, subnormals
# flushed where the unit flushes them) in the pass that gathers them anyway (conv: im2col, the
# fold of a pointwise conv's images): the same values as the executor's upcast, one pass less.
# Their fp16 constants are still upcast once, when the plan is prepared.
READS_FP16_OPERANDS = frozenset({"conv"})

Unit = Literal["cpu", "gpu", "ane"]


@dataclass(frozen=True)
class Accumulation:
    """How an fp16 op sums its terms (executed by ``ops/_accumulate.py``).

    ``kind``:
      * ``"fp32"``: terms summed in fp32, the result rounded once to fp16 at the op's output;
      * ``"fp16"``: an fp16 running sum, rounded after every addition, in the order of the
        reduced axis;
      * ``"tiles"``: the ANE's two stages: ``tile`` consecutive terms added in order in fp16
        (rounded after each addition), each tile's result added to a wide fp32 accumulator,
        whose value is rounded to fp16 at the output port.
    """

    kind: Literal["fp32", "fp16", "tiles"]
    tile: int = 4
    # MAC output port: a partial or output of magnitude >= ceiling becomes +-inf (MAC ops only).
    ceiling: float | None = None
    # fp16 subnormal operands and results of MAC ops become +0.
    flush_subnormals: bool = False
    # Rounding of MAC sums to fp16: ties to even, or away from zero.
    ties: Literal["even", "away"] = "even"


FP32_ACCUMULATION = Accumulation("fp32")
FP16_ACCUMULATION = Accumulation("fp16")


@dataclass(frozen=True)
class UnitModel:
    """How one compute unit computes the fp16-typed ops placed on it."""

    unit: Unit
    device: str
    accumulation: Accumulation
    # Multi-step element-wise kernels compute from fp32 copies of their fp16 inputs and round
    # once at the output (True), or on fp16 values, rounding every intermediate (False).
    fp32_intermediates: bool = True
    # The ANE's datapath rules: NaN in -> +inf, indeterminate forms -> +0, activation tables,
    # bias added in fp16 (datapath.py).
    ane_datapath: bool = False
    # Width-axis slices with a nonzero begin offset pass through a x gain fixed-point DMA.
    width_slice_gain: float | None = None
    # reduce_sum_square rounds each square to fp16 before the sum (M1: no fused square).
    rounded_squares: bool = False

    @property
    def label(self) -> str:
        return f"{self.unit}-{self.device}" if self.unit == "ane" else self.unit


def cpu_model(device: str = DEFAULT_DEVICE) -> UnitModel:
    return UnitModel("cpu", device, FP16_ACCUMULATION, fp32_intermediates=True)


def gpu_model(device: str = DEFAULT_DEVICE, low_precision_accumulation: bool = False) -> UnitModel:
    accumulation = FP16_ACCUMULATION if low_precision_accumulation else FP32_ACCUMULATION
    return UnitModel("gpu", device, accumulation, fp32_intermediates=False)


def ane_model(generation: Generation) -> UnitModel:
    m1_like = generation.name in ("m1", "m2")
    return UnitModel(
        "ane",
        generation.name,
        Accumulation(
            "tiles",
            tile=4,
            ceiling=32768.0,
            flush_subnormals=m1_like,
            ties="even" if m1_like else "away",
        ),
        fp32_intermediates=True,
        ane_datapath=True,
        width_slice_gain=16.0 if m1_like else None,
        rounded_squares=generation.name == "m1",
    )


@dataclass(frozen=True)
class UnitModels:
    """The models of the units ``compute_units`` allows, in Core ML's order of preference."""

    compute_units: str
    device: str
    ane: UnitModel | None
    fallback: UnitModel  # where an op the ANE cannot run goes: GPU under all, else CPU
    cpu: UnitModel
    gpu_low_precision_accumulation: bool = False

    @property
    def preferred(self) -> UnitModel:
        return self.ane or self.fallback


def unit_models(compute_units: str, device: str = DEFAULT_DEVICE, gpu_low_precision_accumulation: bool = False) -> UnitModels:
    """The unit models for a ``compute_units`` choice on a ``device`` generation.

    Raises
    ------
    ValueError
        For an unknown compute units or device name (the message lists the choices).
    """
    key = str(compute_units).lower()
    if key not in COMPUTE_UNITS:
        raise ValueError(f"unknown compute_units {compute_units!r}; choose one of {', '.join(COMPUTE_UNITS)}")
    generation = get_generation(device)
    cpu = cpu_model(generation.name)
    gpu = gpu_model(generation.name, gpu_low_precision_accumulation)
    ane = ane_model(generation) if key in ("cpu_and_ne", "all") else None
    fallback = gpu if key in ("cpu_and_gpu", "all") else cpu
    return UnitModels(key, generation.name, ane, fallback, cpu, gpu_low_precision_accumulation)


# ---------------------------------------------------------------------------------------
# The table: one row per behaviour, with its source, how the emulator realises it, and what
# is not modelled. docs/numerics.md's tables are generated from it.


@dataclass(frozen=True)
class Behaviour:
    key: str
    units: str  # which unit and devices it applies to
    what: str  # what the device does
    source: str  # document, section, device measured
    emulation: str  # how the emulator realises it
    not_modelled: str = ""


BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        "cpu.arithmetic", "CPU, all devices",
        "fp16-typed ops keep fp16 storage; each element-wise result is rounded once to fp16.",
        "coremltools docs, 'Typed Execution' (ML programs run at the precision their ops declare)",
        "kernels compute from fp32 copies of the fp16 inputs; the executor rounds each output, "
        "ties to even",
        "Accelerate's own approximations of transcendental functions",
    ),
    Behaviour(
        "cpu.accumulation", "CPU, all devices",
        "Long sums lose more than on the ANE: #2625 measures CPU_ONLY max error 0.030-0.040 on "
        "ResNet18 against 0.012-0.013 for ALL (fp16 programs).",
        f"{COREMLTOOLS_ISSUE.format(2625)} (M4, coremltools 9.0); Apple does not document its "
        "CPU kernels",
        "choice: matmul, conv and reductions keep an fp16 running sum along the reduced axis "
        "(taps outer, input channels inner for conv), rounded after every product: the exact "
        "product joins the sum in fp32, and that sum is rounded to fp16 (a half-precision FMA "
        "rounds once; the two differ in about 4 of 100,000 steps on random fp16 operands); "
        "the bias is added in fp16",
        "the real blocking and order of the CPU kernels; whether its steps round once (a "
        "half-precision FMA) or twice; Intel Macs (fp32 CPU arithmetic)",
    ),
    Behaviour(
        "gpu.accumulation", "GPU, all devices",
        "fp16 storage and fp16 element-wise math, fp32 accumulation.",
        "Core ML, MLModelConfiguration.allowLowPrecisionAccumulationOnGPU (default false); "
        "github.com/hollance/neural-engine docs/16-bit.md",
        "sums in fp32 (BLAS), rounded once at the op's output; multi-step element-wise kernels "
        "run on fp16 values, rounding every intermediate",
        "Metal's half-precision transcendental functions",
    ),
    Behaviour(
        "gpu.low_precision_accumulation", "GPU, option",
        "allowLowPrecisionAccumulationOnGPU=true accumulates in fp16.",
        "Core ML, MLModelConfiguration.allowLowPrecisionAccumulationOnGPU",
        "compute_units.gpu_low_precision_accumulation=true: the fp16 running sum of the CPU "
        "model",
        "the GPU's real reduction tree",
    ),
    Behaviour(
        "ane.fp16_datapath", "ANE, all generations",
        "Inputs, weights and outputs are fp16; outputs round half to even.",
        f"{NUMERICS_CHAPTER}, 'fp16 datapath' and 'Edge behavior' (M1)",
        "every ANE op computes from the fp16 values and the executor rounds its output to "
        "fp16, ties to even",
    ),
    Behaviour(
        "ane.wide_accumulator", "ANE, all generations",
        "A wide accumulator of fp32 class, supplied by 4-lane first-stage tiles rounded to fp16: "
        "16000 ones sum exactly; of 16 ones cancelled against +-b, 16 survive up to b=4090 and "
        "4 from b=4096; [4096]+[1]x1024 gives 5116.",
        f"{NUMERICS_CHAPTER}, 'Wide accumulator' (M1/H13, survivor table)",
        "the reduced axis in tiles of 4 consecutive terms (conv: 4 input channels of one tap); "
        "a tile's terms are added in order in fp16, rounding after each addition, and each "
        "tile's result joins an fp32 accumulator, rounded to fp16 at the output port. Chosen "
        "among 126 candidate tile semantics (widths 2/4/8, lane lattices, in-tile arithmetic "
        "and rounding) as the one that reproduces the most published probes while staying "
        "layout independent, as measured: the 16000-ones sum, the worked sum 5116, 16 "
        "survivors at 1024 and the floor of 4 from 4096",
        "the engine's real lane lattice ('re-associates over a fixed lane lattice'): the "
        "model gives 4 survivors at 3000 and 28 at 4090 (measured 16)",
    ),
    Behaviour(
        "ane.bias", "ANE, all generations",
        "The bias is added in the fp16 datapath.",
        f"{NUMERICS_CHAPTER}, 'fp16 datapath' (M1)",
        "conv/linear outputs are rounded to fp16 at the port, then the bias is added and the "
        "sum rounded to fp16 again",
    ),
    Behaviour(
        "ane.mac_ceiling", "ANE, all generations",
        "The multiply-accumulate output port saturates to inf at 2**15 = 32768 on matmul, "
        "linear and any conv with two or more terms per output, for interior partials too; "
        "32752 passes. Reductions, element-wise ops and a 1x1 conv of one input channel hold "
        "the fp16 range (60000 passes).",
        f"{NUMERICS_CHAPTER}, 'Saturation hazard' (M1)",
        "a MAC op whose fp32 partial sum or fp16 output reaches +-32768 returns +-inf (+inf if "
        "partials crossed both ways)",
        "whether M2 and M5 share the ceiling (the guide measured M1): assumed they do",
    ),
    Behaviour(
        "ane.nan", "ANE, all generations",
        "NaN is coerced to +inf at the input boundary and never produced: relu/exp/max of NaN "
        "give inf, sigmoid/tanh/erf give 1, a softmax puts all mass on the NaN lane.",
        f"{NUMERICS_CHAPTER}, 'Edge behavior a correctness oracle must model' (M1)",
        "NaN in any value entering an ANE op from the CPU, the GPU or the program inputs "
        "becomes +inf",
        "layer normalization's variance, where the guide saw NaN enter as a large finite value",
    ),
    Behaviour(
        "ane.indeterminate", "ANE, all generations",
        "Indeterminate forms return +0: inf-inf, 0*inf, sqrt(-1), rsqrt(-1), log(-1).",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1)",
        "any NaN an ANE op computes becomes +0",
    ),
    Behaviour(
        "ane.signed_zero", "ANE, all generations",
        "The sign of a zero is dropped before the reciprocal paths: inverse(-0) = rsqrt(-0) = "
        "+inf; sqrt(-0) = +0.",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1)",
        "inverse, rsqrt and sqrt read -0 as +0",
    ),
    Behaviour(
        "ane.exp_table", "ANE, all generations",
        "exp is a lookup table that first returns inf at x = 11.094 (fp16's own overflow is at "
        "ln(65520) = 11.0904): the fp16 input 11.09375 gives a finite value, 11.1015625 inf.",
        f"{NUMERICS_CHAPTER}, 'Reference: fp16 numeric constants' (M1)",
        "exact exp rounded to fp16, held at 65504 up to x < 11.094 and inf from 11.094",
        "the table's 33 knots (accuracy about half an fp16 ulp is modelled as exact rounding)",
    ),
    Behaviour(
        "ane.softplus_table", "ANE, all generations",
        "softplus drops to 0 from x = 10.408 (a hard cliff), and softplus(+inf) = 0.",
        f"{COREMLTOOLS_ISSUE.format(2687)} (M-series, macOS); {NUMERICS_CHAPTER}, 'Edge behavior'",
        "softplus(x) = 0 for x >= 10.408, else exact softplus rounded to fp16",
    ),
    Behaviour(
        "ane.other_tables", "ANE, all generations",
        "Table sentinels: softsign(+inf) = +0, log(+0) = -45440.",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1)",
        "those values; log(+inf) = 0, the collapse #2690 shows for an overflowed logsumexp",
        "gelu/swish origin bias (-0.000543, -0.001259 at x = 0), the trig seams, the sigmoid "
        "table's domain clamp (a user sigmoid uses a wider table whose domain is unpublished)",
    ),
    Behaviour(
        "ane.logsumexp", "ANE, all generations",
        "A channel-reduce logsumexp is not max-shifted: past ln(65504/C) its sum overflows and "
        "the output collapses to 0 (C = 32: at x = 7.6313).",
        f"{COREMLTOOLS_ISSUE.format(2690)} (M-series, macOS)",
        "exp of each element, summed in the reduction path (inf past 65504), then the log "
        "table: the collapse is at ln(65520/C) = 7.6246 for C = 32, i.e. at the fp16 input 7.625",
        "the measured 7.6313 (the exp table's own error)",
    ),
    Behaviour(
        "ane.softmax", "ANE, all generations",
        "softmax subtracts a hardware maximum first: [1000, 1, 2, 3] gives [1, 0, 0, 0].",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1)",
        "the spec's max-shifted softmax, its sum in the ANE's accumulator",
    ),
    Behaviour(
        "ane.width_slice_gain", "ANE, m1 and m2",
        "A width-axis (last-axis) slice with a nonzero begin offset goes through a x16 "
        "fixed-point DMA: values above 4094 become inf. Not from A15 on.",
        f"{NUMERICS_CHAPTER}, 'Saturation hazard' (M1/H13 and A14/H14); {PITFALLS_CHAPTER}",
        "slice_by_index/slice_by_size with a nonzero last-axis begin: |x| > 4094 gives +-inf",
    ),
    Behaviour(
        "ane.denormals", "ANE, m1 and m2 flush; m5 keeps",
        "Denormals pass element-wise ops but are flushed inside the multiply-accumulate on M1; "
        "the M5 accumulator keeps them.",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1 and M5 measured)",
        "m1, m2: fp16-subnormal operands and outputs of MAC ops become +0; m5: kept",
        "M2 to M4 were not measured: m2 is assumed to flush like M1",
    ),
    Behaviour(
        "ane.rounding_ties", "ANE, m5",
        "A partial of 2049 at spacing 2 rounds to 2048 on M1 (ties to even) and to 2050 on M5.",
        f"{NUMERICS_CHAPTER}, 'Edge behavior' (M1 and M5; the guide calls the M5 case unresolved)",
        "m5: MAC sums round ties away from zero; m1, m2: ties to even",
    ),
    Behaviour(
        "ane.reduce_sum_square", "ANE, m1",
        "The reduce-then-square fusion exists from M2 on; the M1 emits an extra fp16 round.",
        f"{MATRIX}, reduce_sum_square row",
        "m1: squares are rounded to fp16 before they are summed",
    ),
    Behaviour(
        "ane.fp32_annotations", "ANE, all generations",
        "fp32 type annotations do not reach the silicon: the engine computes fp16.",
        f"{NUMERICS_CHAPTER}, 'fp16 datapath'",
        "Core ML places fp32-typed ops on the GPU or CPU, so the emulator does too (see "
        "placement): they compute in fp32",
        "an fp32 op the engine would run anyway (Core ML's placement is not public)",
    ),
    Behaviour(
        "nn.typed_execution", "NeuralNetwork models (.mlmodel), all units",
        "A NeuralNetwork computes in fp32 on the CPU and in fp16 on the GPU and the Neural Engine, "
        "whatever its weights' storage (fp32, fp16 or quantized weights are expanded at load).",
        "coremltools docs, 'Typed Execution' (neural network models: 'the precision is determined by "
        "the compute unit'); NeuralNetwork.proto (WeightParams, QuantizationParams)",
        "the spec is read as a MIL program (emulator/nn_program.py); under cpu_only it stays fp32, "
        "otherwise coremltools' FP16ComputePrecision types every op fp16 (inputs, outputs and "
        "classify stay fp32) and the ML program models above apply per unit: the ANE model on the "
        "engine, the GPU model (allowLowPrecisionAccumulationOnGPU as for ML programs) off it; "
        "quantized weights are read back as coremltools' _dequantize_wp computes them",
        "assumed, not measured: that an NN op falling back to the CPU under cpu_and_ne computes in "
        "fp16 like its neighbours (the guide says fp16 for GPU/ANE only); the NN runtime's own "
        "layer kernels (the MIL kernels of the same maths are used)",
    ),
    Behaviour(
        "placement", "compute_units=all, cpu_and_ne",
        "Core ML runs each op on the ANE when the engine has a path for it, else on the GPU "
        "(all) or the CPU (cpu_and_ne).",
        f"{MATRIX} (M1, M2, M5 measured); per-chip limits table",
        "an estimate: ops with no ANE path on the device's generation, fp32-typed ops and "
        "shapes beyond the generation's limits run under the GPU (all) or CPU (cpu_and_ne) "
        "model; placement.csv lists op, layer, unit and reason",
        "Core ML's cost model (it may keep short segments off the engine); on a Mac, "
        "placement_coreml.csv gives the real plan",
    ),
)


# ---------------------------------------------------------------------------------------
# Published probes: each is replayed by tests/emulator/test_numerics_probes.py.


@dataclass(frozen=True)
class Probe:
    key: str
    behaviour: str
    device: str
    what: str
    measured: str  # the value the source gives (M1 unless the device says otherwise)
    emulated: str  # the value the emulator gives
    source: str = NUMERICS_CHAPTER

    @property
    def reproduced(self) -> bool:
        return self.measured == self.emulated


PROBES: tuple[Probe, ...] = (
    Probe("sum_16000_ones", "ane.wide_accumulator", "m1", "16000 ones summed through a matmul", "16000", "16000"),
    Probe("worked_sum", "ane.wide_accumulator", "m1", "[4096] + [1] x 1024 through a matmul", "5116", "5116"),
    Probe("survivors", "ane.wide_accumulator", "m1",
          "ones surviving [b, -b, 1] x 16 for b = 1024, 3000, 4090, 4096, 8000, 16000, 30000",
          "16 16 16 4 4 4 4", "16 4 28 4 4 4 4"),
    Probe("mac_ceiling_linear", "ane.mac_ceiling", "m1", "linear (K=1, K=2) output 32752 / 32768",
          "32752 inf", "32752 inf"),
    Probe("mac_ceiling_conv", "ane.mac_ceiling", "m1", "2-channel conv output 32768; 1x1 conv of one channel at 60000",
          "inf 60000", "inf 60000"),
    Probe("mac_ceiling_partial", "ane.mac_ceiling", "m1", "matmul partial 40000 cancelled back to 0",
          "inf", "inf"),
    Probe("reduce_sum_range", "ane.mac_ceiling", "m1", "reduce_sum of 60000 and 0 (no MAC ceiling)",
          "60000", "60000"),
    Probe("nan_table", "ane.nan", "m1",
          "NaN through x+0, relu, sigmoid, tanh, erf, exp, maximum(NaN, 1)",
          "inf inf 1 1 1 inf inf", "inf inf 1 1 1 inf inf"),
    Probe("nan_softmax", "ane.nan", "m1", "softmax of [NaN, 1, 2]", "1 0 0", "1 0 0"),
    Probe("indeterminate", "ane.indeterminate", "m1",
          "inf - inf, 0 * inf, sqrt(-1), rsqrt(-1), log(-1)", "0 0 0 0 0", "0 0 0 0 0"),
    Probe("signed_zero", "ane.signed_zero", "m1", "inverse(-0), rsqrt(-0), sqrt(-0)", "inf inf 0", "inf inf 0"),
    Probe("exp_overflow", "ane.exp_table", "m1",
          "exp of the fp16 values either side of 11.094 (11.09375, 11.1015625)", "65504 inf", "65504 inf"),
    Probe("softplus_cliff", "ane.softplus_table", "m1",
          "softplus of the fp16 values either side of 10.408 (10.40625, 10.4140625), and of inf",
          "10.40625 0 0", "10.40625 0 0", COREMLTOOLS_ISSUE.format(2687)),
    Probe("table_sentinels", "ane.other_tables", "m1", "softsign(inf), log(0)", "0 -45440", "0 -45440"),
    Probe("logsumexp_cliff", "ane.logsumexp", "m1",
          "channel logsumexp over C=32 equal fp16 values x: first x whose output collapses to 0",
          "7.6313", "7.625", COREMLTOOLS_ISSUE.format(2690)),
    Probe("softmax_shift", "ane.softmax", "m1", "softmax of [1000, 1, 2, 3]", "1 0 0 0", "1 0 0 0"),
    Probe("width_slice_m1", "ane.width_slice_gain", "m1",
          "width slice at begin 1 of 4094 / 4096; begin 0 of 4096; height offset of 4096",
          "4094 inf 4096 4096", "4094 inf 4096 4096"),
    Probe("width_slice_m5", "ane.width_slice_gain", "m5", "width slice at begin 1 of 4096", "4096", "4096"),
    Probe("denormal_elementwise", "ane.denormals", "m1", "2**-24 through x+0 and x*1", "2**-24 2**-24", "2**-24 2**-24"),
    Probe("denormal_mac_m1", "ane.denormals", "m1", "matmul summing two 2**-24", "0", "0"),
    Probe("denormal_mac_m5", "ane.denormals", "m5", "matmul summing two 2**-24", "2**-23", "2**-23"),
    Probe("ties_m1", "ane.rounding_ties", "m1", "partial 2049 through a matmul", "2048", "2048"),
    Probe("ties_m5", "ane.rounding_ties", "m5", "partial 2049 through a matmul", "2050", "2050"),
)


@dataclass(frozen=True)
class PublishedErrors:
    """Per-compute-unit errors a public source measured on a model we can rebuild in Keras."""

    model: str
    source: str
    max_abs_error: dict = field(default_factory=dict)  # compute units -> (low, high)


PUBLISHED_ERRORS: tuple[PublishedErrors, ...] = (
    PublishedErrors("ResNet18", f"{COREMLTOOLS_ISSUE.format(2625)} (M4, fp16, PyTorch reference)",
                    {"all": (0.012, 0.013), "cpu_only": (0.030, 0.040)}),
    PublishedErrors("MobileNetV3Small", f"{COREMLTOOLS_ISSUE.format(2625)} (M4, fp16, PyTorch reference)",
                    {"all": (0.19, 0.26), "cpu_only": (0.064, 0.086)}),
)


def behaviours_markdown() -> str:
    """docs/numerics.md's numerics table (one row per behaviour), generated from :data:`BEHAVIOURS`."""
    rows = ["| behaviour | units | what the device does | source | what the emulator does | not modelled |",
            "|---|---|---|---|---|---|"]
    for b in BEHAVIOURS:
        cells = [f"`{b.key}`", b.units, b.what, b.source, b.emulation, b.not_modelled or "-"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def probes_markdown() -> str:
    """docs/numerics.md's table of published probes and what the emulator gives."""
    rows = ["| probe | device | measured | emulator | reproduced |", "|---|---|---|---|---|"]
    for p in PROBES:
        rows.append(f"| {p.what} | {p.device} | {p.measured} | {p.emulated} | {'yes' if p.reproduced else 'no'} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m precision_sweep.emulator.numerics: docs/numerics.md's tables
    print(behaviours_markdown())
    print()
    print(probes_markdown())
