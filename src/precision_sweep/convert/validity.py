"""Which precision recipes can deploy at which targets, and why not.

The rules come from the MIL opsets: compressed weights are ``constexpr_*`` ops, which exist
from iOS16/macOS13 (spec 7); per-block quantization and 4-bit types need the iOS18
``constexpr_blockwise_shift_scale`` (spec 9). coremltools does not refuse such combinations,
it silently raises the model's spec version, so we check before converting (this module) and
after saving (the effective target read back from the package).
"""

from __future__ import annotations

from precision_sweep.convert.targets import spec_version


def required_spec(precision) -> tuple[int, str]:
    """Lowest spec version a precision recipe needs, and the reason."""
    wq = precision.get("weight_quantization") if hasattr(precision, "get") else None
    if wq:
        if wq.get("granularity") == "per_block" or str(wq.get("dtype")) in ("int4", "uint4"):
            return 9, "per-block and 4-bit weight quantization need iOS18/macOS15 (constexpr_blockwise_shift_scale)"
        return 7, "weight compression needs iOS16/macOS13 or later (constexpr_affine_dequantize)"
    return 6, ""


def invalid_reason(precision, target) -> str | None:
    """Why ``precision`` cannot deploy at ``target``, or None if it can."""
    needed, why = required_spec(precision)
    have = spec_version(target.coremltools_target)
    if have < needed:
        return f"{precision.name} cannot deploy at {target.name}: {why}"
    return None
