"""The emulator's per-compute-unit errors beside published ones (coremltools #2625).

coremltools issue #2625 measured, on an Apple M4 (coremltools 9.0, fp16 ML programs, PyTorch
fp32 reference), the max absolute output error of ResNet18 and MobileNetV3 Small under
``ComputeUnit.ALL`` and ``CPU_ONLY``:

    ResNet18           ALL 0.012-0.013   CPU_ONLY 0.030-0.040   (CPU further from fp32)
    MobileNetV3 Small  ALL 0.19-0.26     CPU_ONLY 0.064-0.086   (ALL further from fp32)

This rebuilds both in Keras (ResNet18 by hand, MobileNetV3Small from keras.applications),
with seeded random weights whose batch-norm statistics are set from one batch of inputs (so
activations have realistic scales; the published figures use trained weights, so only the
*ordering* of the compute units is comparable, not the magnitudes), converts them to fp16
ML programs and prints the emulator's max absolute error against TensorFlow's fp32 output
(logits) under each compute-units model, for three seeds, and whether each published
ordering is reproduced.

Usage::

    python benchmarks/published_errors.py [--size 224] [--images 4] [--seeds 42 123 456]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

UNITS = (("cpu_only", "m1"), ("cpu_and_gpu", "m1"), ("all", "m1"), ("all", "m5"))


def resnet18(size: int):
    """ResNet18 (basic blocks 2-2-2-2, 64-512 channels), logits out."""
    import keras

    L = keras.layers

    def block(x, filters, stride):
        shortcut = x
        y = L.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
        y = L.ReLU()(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = L.BatchNormalization()(L.Conv2D(filters, 1, stride, use_bias=False)(shortcut))
        return L.ReLU()(L.Add()([y, shortcut]))

    inputs = keras.Input((size, size, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 7, 2, padding="same", use_bias=False)(inputs)))
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    for filters, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        x = block(x, filters, stride)
    return keras.Model(inputs, L.Dense(1000)(L.GlobalAveragePooling2D()(x)), name="resnet18")


def mobilenet_v3_small(size: int):
    import keras

    return keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3), weights=None, classes=1000, classifier_activation=None, include_preprocessing=False
    )


def calibrate_batch_norm(model, x) -> None:
    """Set every batch-norm layer's moving statistics from one forward pass over ``x``."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 123, 456])
    args = parser.parse_args(argv)

    import keras

    import _emu_helpers as H
    from precision_sweep.emulator import Emulator
    from precision_sweep.emulator.numerics import PUBLISHED_ERRORS

    published = {p.model: p for p in PUBLISHED_ERRORS}
    builders = {"ResNet18": resnet18, "MobileNetV3Small": mobilenet_v3_small}
    results: dict[str, dict[str, list[float]]] = {}
    for name, build in builders.items():
        errors: dict[str, list[float]] = {f"{u}/{d}": [] for u, d in UNITS}
        for seed in args.seeds:
            keras.utils.set_random_seed(seed)
            model = build(args.size)
            rng = np.random.default_rng(seed)
            calibrate_batch_norm(model, rng.uniform(-1, 1, (16, args.size, args.size, 3)).astype(np.float32))
            x = rng.uniform(-1, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
            reference = np.asarray(model(x, training=False), dtype=np.float64)
            program = H.convert(model, [x.shape], precision="fp16")
            for units, device in UNITS:
                (got,) = Emulator(program, compute_units=units, device=device).predict({"input_0": x}).values()
                errors[f"{units}/{device}"].append(float(np.max(np.abs(np.asarray(got, np.float64) - reference))))
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in errors.items()), flush=True)
        results[name] = errors

    print(f"\nmax |emulator fp16 - TF fp32| over {args.images} images at {args.size}x{args.size}, "
          f"seeds {args.seeds} (min-max), beside coremltools #2625 (M4, trained weights):")
    print(f"{'model':<18}{'compute units':<18}{'emulator':>18}{'published':>18}")
    for name, errors in results.items():
        for key, values in errors.items():
            units = key.split("/")[0]
            source = published[name].max_abs_error.get(units)
            shown = f"{source[0]:.3f}-{source[1]:.3f}" if source and key.endswith("m1") else "-"
            print(f"{name:<18}{key:<18}{f'{min(values):.4f}-{max(values):.4f}':>18}{shown:>18}")
    print()
    for name, errors in results.items():
        ranges = published[name].max_abs_error
        cpu_worse_published = ranges["cpu_only"][0] > ranges["all"][1]
        cpu_worse_emulated = np.median(errors["cpu_only/m1"]) > np.median(errors["all/m1"])
        status = "reproduced" if cpu_worse_published == cpu_worse_emulated else "NOT reproduced"
        order = "CPU_ONLY further from fp32 than ALL" if cpu_worse_published else "ALL further from fp32 than CPU_ONLY"
        print(f"{name}: published ordering '{order}': {status}")


if __name__ == "__main__":
    main()
