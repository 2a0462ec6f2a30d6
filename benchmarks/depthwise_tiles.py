"""The depthwise conv kernels on MobileNetV2's depthwise layers: the Neural Engine's tiles
against fp32, and the compiled kernels against their numpy twins, in one process.

For each depthwise layer shape of MobileNetV2 at 96x96 (batch 32, 3x3 kernels, stride 1 and
2) this times the compiled 2-D depthwise conv in fp32 (mode 0), as an fp16 running sum (mode
1, the GPU model) and in the Neural Engine's tiles through the output port (mode 2), plus the
numpy path of mode 2 (``conv._depthwise``, the plain twin the compiled kernel is tested
against bit for bit), best of a few runs, and prints each time and the ratios tiles / fp32
and numpy / compiled tiles.

Usage::

    python benchmarks/depthwise_tiles.py [--batch 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from emulator_vs_tf import best_time  # noqa: E402  (the benchmarks' one timer)

# (spatial size, channels, stride) of MobileNetV2 96x96's depthwise layers (one of each kind)
SHAPES = [(48, 32, 1), (48, 96, 2), (24, 144, 1), (24, 144, 2), (12, 192, 1), (12, 192, 2),
          (6, 384, 1), (6, 576, 1), (6, 576, 2), (3, 960, 1)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    from precision_sweep.emulator import numerics
    from precision_sweep.emulator.ops._accumulate import Accumulator
    from precision_sweep.emulator.ops._conv_kernels import depthwise_conv2d
    from precision_sweep.emulator.ops.conv import _depthwise, _out_shape

    tiles = Accumulator(numerics.unit_models("cpu_and_ne", "m1").ane.accumulation)
    rng = np.random.default_rng(0)
    totals = np.zeros(4)
    print("size  chan stride   fp32_ms  fp16_ms  tiles_ms  numpy_tiles_ms  tiles/fp32  numpy/tiles")
    for size, channels, stride in SHAPES:
        x = rng.uniform(-1, 1, (args.batch, channels, size, size)).astype(np.float16).astype(np.float32)
        weight = rng.uniform(-1, 1, (channels, 1, 3, 3)).astype(np.float16).astype(np.float32)
        pads = [(1, 1), (1, 1)] if stride == 1 else [(0, 1), (0, 1)]
        strides, dilations = (stride, stride), (1, 1)
        xp = np.pad(x, [(0, 0), (0, 0), *pads])
        out_shape = _out_shape(xp.shape[2:], (3, 3), strides, dilations)
        spec = tiles.spec
        times = [
            best_time(lambda: depthwise_conv2d(x, weight, strides, dilations, pads, 0), args.repeats),
            best_time(lambda: depthwise_conv2d(x, weight, strides, dilations, pads, 1), args.repeats),
            best_time(lambda: depthwise_conv2d(x, weight, strides, dilations, pads, 2, spec.tile, 32768.0), args.repeats),
            best_time(lambda: _depthwise(xp, weight, list(strides), list(dilations), out_shape, tiles), max(1, args.repeats // 3)),
        ]
        totals += times
        ms = [t * 1000 for t in times]
        print(f"{size:4d} {channels:5d} {stride:6d} {ms[0]:9.2f} {ms[1]:8.2f} {ms[2]:9.2f} {ms[3]:15.1f} "
              f"{times[2] / times[0]:11.2f} {times[3] / times[2]:12.1f}")
    ms = totals * 1000
    print(f"all layers: fp32 {ms[0]:.1f} ms, fp16 {ms[1]:.1f} ms, tiles {ms[2]:.1f} ms, numpy tiles {ms[3]:.0f} ms; "
          f"tiles/fp32 {totals[2] / totals[0]:.2f}, numpy/compiled tiles {totals[3] / totals[2]:.1f}")


if __name__ == "__main__":
    main()
