"""Kernels, one module per MIL op family (mirroring coremltools' ``ops/defs`` file names).

Importing this package registers every kernel in :data:`precision_sweep.emulator.registry.KERNELS`.
"""

from precision_sweep.emulator.ops import (  # noqa: F401
    activation,
    classify,
    constexpr_ops,
    control_flow,
    conv,
    elementwise_binary,
    elementwise_unary,
    image_resizing,
    linear,
    normalization,
    pool,
    quantization_ops,
    recurrent,
    reduction,
    scatter_gather,
    tensor_operation,
    tensor_transformation,
    transformers,
)
