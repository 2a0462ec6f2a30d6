"""Precision recipes mapped onto coremltools' own API.

``compute_precision`` goes to ``ct.convert``; weight compression goes through
``coremltools.optimize.coreml`` with an ``OptimizationConfig``.
"""

from __future__ import annotations


def compute_precision(precision):
    import coremltools as ct

    value = getattr(precision.compute_precision, "value", precision.compute_precision)
    if value == "float32":
        return ct.precision.FLOAT32
    if value == "float16":
        return ct.precision.FLOAT16
    raise ValueError(f"precision.compute_precision must be float32 or float16, got {value!r}")


def compress_weights(mlmodel, precision):
    """Apply the recipe's weight compression to a converted MLModel (or return it unchanged)."""
    wq = precision.get("weight_quantization")
    if not wq:
        return mlmodel
    import coremltools.optimize.coreml as cto

    op_config = cto.OpLinearQuantizerConfig(
        mode=wq.mode,
        dtype=wq.dtype,
        granularity=wq.granularity,
        block_size=wq.block_size if wq.granularity == "per_block" else None,
        weight_threshold=wq.weight_threshold,
    )
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
