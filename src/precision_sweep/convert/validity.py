"""Which precision recipes can deploy at which targets, and why not.

The rules come from the MIL opsets (coremltools ``converters/mil/mil/ops/defs/iOS*``):

* compressed weights are ``constexpr_*`` ops, which exist from iOS16/macOS13 (spec 7):
  ``constexpr_affine_dequantize`` (int8/uint8 per-tensor/per-channel),
  ``constexpr_lut_to_dense`` (per-tensor LUTs of 1, 2, 4, 6 or 8 bits),
  ``constexpr_sparse_to_dense`` (pruning);
* ``quantize``/``dequantize`` (activation quantization, W8A8) exist from iOS17/macOS14 (spec 8);
* 4-bit integer types, per-block scales (``constexpr_blockwise_shift_scale``), per-grouped-channel
  or 3-bit LUTs (iOS18 ``constexpr_lut_to_dense``) and joint compression (pruning with
  quantization or palettization: ``constexpr_sparse_blockwise_shift_scale``,
  ``constexpr_lut_to_sparse``) exist from iOS18/macOS15 (spec 9).

coremltools does not refuse such combinations, it silently raises the model's spec version, so
we check before converting (this module) and after saving (the effective target read back from
the package).

Neuralnetwork targets (iOS13/iOS14, macOS10_15/macOS11: spec 4 and 5) have rules of their own
(:func:`nn_reason`), from coremltools' ``models/neural_network/quantization_utils.py``
(``quantize_weights``, the only weight compression of the format) and ``NeuralNetwork.proto``
(``WeightParams``: fp32, fp16, or 1-8 bit ``rawValue`` with ``QuantizationParams``, a linear
scale and bias or one look-up table per weight):

* compute precision is not part of the format: no ``FP16ComputePrecision`` (``ct.convert``
  refuses ``compute_precision`` for neuralnetwork), so no ops kept in fp32;
* ``quantize_weights`` quantizes linearly per output channel (``_quantize_channelwise_linear``),
  symmetric at 8 bits only, and builds one look-up table per weight: no per-tensor scale, no
  per-block scales, no grouped look-up tables;
* no sparse weights and no activation quantization (no such fields or layers to hold them);
* ``quantize_weights`` needs spec 3 (``_MINIMUM_QUANTIZED_MODEL_SPEC_VERSION``), so every
  recipe valid at iOS13 is valid at iOS14 too;
* ``nn_weight_quantization`` (``quantize_weights``) applies to neuralnetwork models only.
"""

from __future__ import annotations

from precision_sweep.convert.targets import NEURALNETWORK, model_format, spec_version

IOS16 = "iOS16/macOS13"
IOS17 = "iOS17/macOS14"
IOS18 = "iOS18/macOS15"


def requirements(precision) -> list[tuple[int, str]]:
    """Every (spec version, reason) a precision recipe needs, in recipe order."""
    needs: list[tuple[int, str]] = []
    pruning = precision.weight_pruning
    wq = precision.weight_quantization
    palettization = precision.weight_palettization
    aq = precision.activation_quantization
    per_op = precision.get("per_op_weights")
    search = precision.get("search")
    if (per_op and per_op.ops) or search:
        from precision_sweep.convert.per_op import required_spec as per_op_spec

        if per_op and per_op.ops:
            needs.append(per_op_spec(per_op.ops.values()))
        if search:  # every setting of the space must deploy
            needs.append(per_op_spec([*search.choices, *(label for labels in search.layers.values() for label in labels)]))
    if aq:
        needs.append((8, f"activation quantization (W8A8) needs {IOS17} or later (quantize/dequantize ops)"))
    if wq:
        if wq.granularity == "per_block":
            needs.append((9, f"per-block weight quantization needs {IOS18} (constexpr_blockwise_shift_scale)"))
        elif wq.dtype in ("int4", "uint4"):
            needs.append((9, f"4-bit weight quantization needs {IOS18} (constexpr_blockwise_shift_scale)"))
        else:
            needs.append((7, f"weight compression needs {IOS16} or later (constexpr_affine_dequantize)"))
    if palettization:
        if palettization.granularity == "per_grouped_channel":
            needs.append((9, f"per-grouped-channel palettization needs {IOS18} (iOS18 constexpr_lut_to_dense)"))
        elif palettization.nbits == 3:
            needs.append((9, f"3-bit palettization needs {IOS18} (iOS18 constexpr_lut_to_dense)"))
        else:
            needs.append((7, f"palettization needs {IOS16} or later (constexpr_lut_to_dense)"))
    if pruning:
        if wq or palettization:
            needs.append((9, f"joint pruning + {'quantization' if wq else 'palettization'} needs {IOS18} "
                             f"({'constexpr_sparse_blockwise_shift_scale' if wq else 'constexpr_lut_to_sparse'})"))
        else:
            needs.append((7, f"sparse weights need {IOS16} or later (constexpr_sparse_to_dense)"))
    return needs


def required_spec(precision) -> tuple[int, str]:
    """Lowest spec version a precision recipe needs, and the reason (the strictest rule)."""
    needs = requirements(precision)
    if not needs:
        return 6, ""
    return max(needs, key=lambda need: need[0])


NN = "neuralnetwork (iOS13/iOS14)"


def nn_reason(precision) -> str | None:
    """Why a recipe has no neuralnetwork form (see the module docstring), or None."""
    wq = precision.weight_quantization
    palettization = precision.weight_palettization
    if precision.get("auto_repair"):
        return (f"the automatic repair keeps ops of an ML Program at higher precision; {NN} models have no "
                "per-op precision (use fp16 or int8)")
    if precision.fp32_ops:
        return (f"{NN} models have no per-op compute precision (the device computes every layer in fp32 on "
                "the CPU, fp16 on the GPU and Neural Engine): ops cannot be kept in fp32")
    if precision.get("per_op_weights") or precision.get("search"):
        return (f"{NN} models take one quantize_weights setting for the whole model: per-op weight settings "
                f"need {IOS16} or later")
    if precision.activation_quantization:
        return f"{NN} models quantize weights only (quantize_weights): activation quantization needs {IOS17}"
    if precision.weight_pruning:
        return f"{NN} weights have no sparse storage: pruning needs {IOS16} or later"
    if sum(map(bool, (wq, palettization, precision.get("nn_weight_quantization")))) > 1:
        return f"{NN} models hold one weight compression per weight"
    if wq:
        if wq.granularity == "per_block":
            return f"quantize_weights quantizes per output channel: per-block weight quantization needs {IOS18}"
        if wq.granularity == "per_tensor":
            return ("quantize_weights quantizes per output channel only (no per-tensor scale): use "
                    "precision=int8 (per_channel)")
        if wq.mode == "linear_symmetric" and wq.dtype in ("int4", "uint4"):
            return ("quantize_weights' linear_symmetric mode is 8-bit only: for 4 bits use "
                    "precision.weight_quantization.mode=linear")
    if palettization and palettization.granularity == "per_grouped_channel":
        return f"quantize_weights builds one look-up table per weight: per-grouped-channel palettization needs {IOS18}"
    nn = precision.get("nn_weight_quantization")
    if nn and nn.quantization_mode == "linear_symmetric" and nn.nbits != 8:
        return "quantize_weights' linear_symmetric mode is 8-bit only (precision.nn_weight_quantization.nbits=8)"
    return None


def invalid_reason(precision, target) -> str | None:
    """Why ``precision`` cannot deploy at ``target``, or None if it can."""
    if model_format(target.coremltools_target) == NEURALNETWORK:
        why = nn_reason(precision)
        return None if why is None else f"{precision.name} cannot deploy at {target.name}: {why}"
    if precision.get("nn_weight_quantization"):
        return (f"{precision.name} cannot deploy at {target.name}: nn_weight_quantization (quantize_weights) "
                f"compresses {NN} models only; at ML Program targets use int8 or palettize")
    needed, why = required_spec(precision)
    have = spec_version(target.coremltools_target)
    if have < needed:
        return f"{precision.name} cannot deploy at {target.name}: {why}"
    return None


def validity_matrix(precisions, targets) -> dict[tuple[str, str], str | None]:
    """``{(precision name, target name): reason or None}`` for config nodes of both groups."""
    return {(p.name, t.name): invalid_reason(p, t) for p in precisions for t in targets}


def markdown_table(precisions, targets) -> str:
    """The validity matrix as a Markdown table (``yes`` or ``skipped: <reason>``)."""
    lines = ["| precision | " + " | ".join(t.name for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for p in precisions:
        cells = []
        for t in targets:
            reason = invalid_reason(p, t)
            cells.append("yes" if reason is None else "skipped: " + reason.split(": ", 1)[1])
        lines.append(f"| {p.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
