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
"""

from __future__ import annotations

from precision_sweep.convert.targets import spec_version

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


def invalid_reason(precision, target) -> str | None:
    """Why ``precision`` cannot deploy at ``target``, or None if it can."""
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
