"""Shared helpers of the compression tests: the models, their data, and conversion + emulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweep_testing import compose

# Valid recipe -> op types its program must hold, per target (None: no compressed weights).
EXPECTED_OPS = {
    "fp32": {},
    "fp16": {},
    "fp16_mixed": {},
    "int8": {"iOS16": {"constexpr_affine_dequantize"}, "iOS17": {"constexpr_affine_dequantize"},
             "iOS18": {"constexpr_blockwise_shift_scale"}},
    "int8_per_tensor": {"iOS16": {"constexpr_affine_dequantize"}, "iOS17": {"constexpr_affine_dequantize"},
                        "iOS18": {"constexpr_blockwise_shift_scale"}},
    "int8_per_block": {"iOS18": {"constexpr_blockwise_shift_scale"}},
    "int4_per_block": {"iOS18": {"constexpr_blockwise_shift_scale"}},
    "palettize": {t: {"constexpr_lut_to_dense"} for t in ("iOS16", "iOS17", "iOS18")},
    "palettize_grouped": {"iOS18": {"constexpr_lut_to_dense"}},
    "sparse": {t: {"constexpr_sparse_to_dense"} for t in ("iOS16", "iOS17", "iOS18")},
    "sparse_int8": {"iOS18": {"constexpr_sparse_blockwise_shift_scale"}},
    "sparse_palettize": {"iOS18": {"constexpr_lut_to_sparse"}},
    "w8a8": {"iOS17": {"quantize", "dequantize", "constexpr_affine_dequantize"},
             "iOS18": {"quantize", "dequantize", "constexpr_blockwise_shift_scale"}},
    "nn_lut_linear": {},  # neuralnetwork targets only (test_nn_conversion)
}
RECIPES = sorted(EXPECTED_OPS)


def valid_cells(targets=("ios16", "ios17", "ios18")):
    from precision_sweep.convert import invalid_reason

    cells = []
    for recipe in RECIPES:
        for target in targets:
            cfg = compose([f"precision={recipe}", f"target={target}"])
            if invalid_reason(cfg.precision, cfg.target) is None:
                cells.append((recipe, target))
    return cells


def mobilenet(size: int = 32, n: int = 48, seed: int = 0):
    """MobileNetV2 (alpha 0.35, random weights) through the builtin builder, random images."""
    from types import SimpleNamespace

    from precision_sweep.data.builtin_models import mobilenet_v2
    from precision_sweep.data.models import LoadedModel, _content_hash

    x = np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)
    data = SimpleNamespace(x_train=x, n_classes=10)
    model = mobilenet_v2(data, epochs=0, seed=seed)
    loaded = LoadedModel("mobilenet_v2", model, "image", (size, size, 3), "probabilities", _content_hash(model))
    return loaded, x


def convert_and_run(model, recipe: str, target: str, out_dir: Path, x: np.ndarray, calibration=None, cache_dir=None,
                    overrides=()):
    """Convert ``model`` with the real composed recipe, run it in the emulator: (converted, ops, outputs)."""
    from precision_sweep.convert import convert_variant
    from precision_sweep.emulator import Emulator

    cfg = compose([f"precision={recipe}", f"target={target}", *overrides])
    if calibration is not None and not cfg.precision.get("activation_quantization"):
        calibration = None
    converted = convert_variant(model, cfg.precision, cfg.target, out_dir / f"{recipe}-{target}.mlpackage",
                                cache_dir=cache_dir, calibration=calibration)
    emulator = Emulator(converted.path, compute_units="cpu_only")
    ops = {op_type for op_type, *_ in emulator.plan.producers.values()}
    outputs = emulator.predict({emulator.input_names[0]: x})[emulator.output_names[0]].astype(np.float32)
    return converted, ops, outputs
