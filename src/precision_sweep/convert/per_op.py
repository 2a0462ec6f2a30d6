"""Per-op weight compression: one setting per weight-bearing op (a mixed-precision recipe).

A recipe's ``per_op_weights`` maps op names (as the fp16 ML program names the op that reads
the weight: a ``conv``, ``linear`` or ``matmul``) to a choice label; ops not named keep fp16
weights. Labels, each one coremltools config:

* ``fp16``: uncompressed;
* ``int8``: ``OpLinearQuantizerConfig(linear_symmetric, int8, per_channel)`` (iOS16);
* ``int4_block<B>``: ``OpLinearQuantizerConfig(linear_symmetric, int4, per_block, block_size=B)``
  (iOS18), e.g. ``int4_block32``;
* ``pal<K>``: ``OpPalettizerConfig(nbits=K, kmeans, per_tensor)``, K in 1, 2, 4, 6, 8 (iOS16)
  or 3 (iOS18), e.g. ``pal2``;
* ``sparse<P>``: ``OpMagnitudePrunerConfig(target_sparsity=P/100)`` (iOS16), e.g. ``sparse50``.

:func:`compress_per_op` applies an assignment with coremltools' own per-op configuration
(``OptimizationConfig(op_name_configs=...)``, no global config), one call per kind: pruning,
palettization, then linear quantization, so each op gets exactly its own setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IOS16, IOS18 = 7, 9
_TARGET_NAMES = {IOS16: "iOS16/macOS13", IOS18: "iOS18/macOS15"}
FORMS = "fp16, int8, int4_block<B> (e.g. int4_block32), pal<K> (K in 1, 2, 3, 4, 6, 8), sparse<P> (e.g. sparse50)"
_LABEL = re.compile(r"^(fp16|int8|int4_block(\d+)|pal(\d)|sparse(\d{1,2}))$")


class UnknownChoiceError(ValueError):
    """A label that is not one of :data:`FORMS`."""


@dataclass(frozen=True)
class Choice:
    """One per-op weight setting (see the module docstring)."""

    label: str
    kind: str  # "float", "quantize", "palettize" or "prune"
    nbits: int = 16
    block_size: int = 0
    sparsity: float = 0.0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, the scales and tables aside (sparse: the fp16 values kept
        plus a one-bit mask)."""
        if self.kind == "prune":
            return 16 * (1 - self.sparsity) + 1
        return float(self.nbits)

    def required_spec(self) -> tuple[int, str]:
        """The lowest spec version that holds the setting, and why."""
        if self.kind == "float":
            return 6, ""
        if self.kind == "quantize" and self.nbits == 4:
            return IOS18, f"{self.label}: 4-bit per-block quantization needs {_TARGET_NAMES[IOS18]} (constexpr_blockwise_shift_scale)"
        if self.kind == "palettize" and self.nbits == 3:
            return IOS18, f"{self.label}: 3-bit palettization needs {_TARGET_NAMES[IOS18]} (iOS18 constexpr_lut_to_dense)"
        return IOS16, f"{self.label}: compressed weights need {_TARGET_NAMES[IOS16]} or later (constexpr ops)"

    def op_config(self, weight_threshold: int):
        """The coremltools per-op config of this setting (None for fp16)."""
        import coremltools.optimize.coreml as cto

        if self.kind == "quantize":
            if self.nbits == 8:
                return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                   weight_threshold=weight_threshold)
            return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                               block_size=self.block_size, weight_threshold=weight_threshold)
        if self.kind == "palettize":
            return cto.OpPalettizerConfig(nbits=self.nbits, mode="kmeans", granularity="per_tensor",
                                          weight_threshold=weight_threshold)
        if self.kind == "prune":
            return cto.OpMagnitudePrunerConfig(target_sparsity=self.sparsity, weight_threshold=weight_threshold)
        return None


def parse_choice(label: str) -> Choice:
    """The :class:`Choice` a label names; :class:`UnknownChoiceError` says the forms."""
    match = _LABEL.match(str(label).strip())
    if not match:
        raise UnknownChoiceError(f"{label!r} is not a per-op weight setting; use one of: {FORMS}.")
    label = match.group(1)
    if label == "fp16":
        return Choice(label, "float")
    if label == "int8":
        return Choice(label, "quantize", nbits=8)
    if match.group(2):
        block = int(match.group(2))
        if block < 1:
            raise UnknownChoiceError(f"{label!r}: the block size must be at least 1, e.g. int4_block32.")
        return Choice(label, "quantize", nbits=4, block_size=block)
    if match.group(3):
        nbits = int(match.group(3))
        if nbits not in (1, 2, 3, 4, 6, 8):
            raise UnknownChoiceError(f"{label!r}: coremltools palettizes to 1, 2, 3, 4, 6 or 8 bits.")
        return Choice(label, "palettize", nbits=nbits)
    percent = int(match.group(4))
    if not 0 < percent < 100:
        raise UnknownChoiceError(f"{label!r}: the sparsity must be 1 to 99 percent, e.g. sparse50.")
    return Choice(label, "prune", sparsity=percent / 100)


def required_spec(labels) -> tuple[int, str]:
    """The lowest spec version holding every setting in ``labels``, and why."""
    needs = [parse_choice(label).required_spec() for label in labels]
    return max(needs, key=lambda need: need[0], default=(6, ""))


def compress_per_op(mlmodel, assignment: dict[str, str], weight_threshold: int = 128):
    """``mlmodel`` (an fp16 ML program) with each named op's weights compressed as assigned.

    One coremltools call per kind (pruning, palettization, linear quantization), each with an
    ``op_name_configs`` entry per op of that kind and no global config, so the ops not named
    keep their weights."""
    import coremltools.optimize.coreml as cto

    by_kind: dict[str, dict] = {"prune": {}, "palettize": {}, "quantize": {}}
    for op_name, label in sorted(assignment.items()):
        choice = parse_choice(label)
        if choice.kind != "float":
            by_kind[choice.kind][op_name] = choice.op_config(weight_threshold)
    stages = (("prune", cto.prune_weights), ("palettize", cto.palettize_weights), ("quantize", cto.linear_quantize_weights))
    for kind, compress in stages:
        if by_kind[kind]:
            mlmodel = compress(mlmodel, cto.OptimizationConfig(global_config=None, op_name_configs=by_kind[kind]))
    return mlmodel


WEIGHT_OPS = ("conv", "conv_transpose", "linear", "matmul", "einsum")


@dataclass(frozen=True)
class WeightOp:
    """A weight-bearing op of an fp16 ML program: its name (the key of ``per_op_weights``), type
    and the element count of its largest constant input (the weight)."""

    name: str
    op_type: str
    weights: int


def weight_ops(package, weight_threshold: int = 128) -> list[WeightOp]:
    """The ops of ``package`` (an fp16 ML program) whose weights a per-op setting compresses:
    weight-bearing ops with a constant input of at least ``weight_threshold`` elements, in
    program order."""
    from precision_sweep.emulator.program import load_program

    program, _ = load_program(package)
    found = []
    for op in program.functions["main"].operations:
        if op.op_type not in WEIGHT_OPS:
            continue
        sizes = [int(var.val.size) for var in op.inputs.values()
                 if not isinstance(var, (list, tuple)) and var.op is not None and var.op.op_type == "const"
                 and getattr(var.val, "size", 0)]
        if sizes and max(sizes) >= weight_threshold:
            found.append(WeightOp(op.name, op.op_type, max(sizes)))
    return found
