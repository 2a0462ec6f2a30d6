"""The depthwise conv kernels of this checkout against another revision's, per layer, in one
process.

``_conv_kernels.py`` imports nothing of its own revision but ``_accumulate_kernels``,
``_casts`` and ``_half``, so the other revision's copy of that one file (``git show``) loads
beside this checkout's under another module name: both sides run in the same process on the
same arrays, alternating, and must give the same bits (checked on every layer). For each
depthwise layer of MobileNetV2 and EfficientNetB0 at ``--size`` (batch 32, 3x3 and 5x5
kernels, stride 1 and 2, fp16 values) it prints the median time of each side over
``--repeats`` alternating calls and their ratio, per summation mode (0 fp32, 1 the fp16
running sum, 2 the Neural Engine's tiles, M1 port), then each model's total (layers weighted
by how often they occur). Usage::

    python benchmarks/depthwise_ab.py --against d86e9a6 [--size 224] [--modes 0 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

KERNELS = "src/precision_sweep/emulator/ops/_conv_kernels.py"
# (spatial size at 224², channels, stride, kernel, layers of this shape) of each model's
# depthwise convs; sizes scale with the input.
LAYERS = {
    "MobileNetV2": [(112, 32, 1, 3, 1), (112, 96, 2, 3, 1), (56, 144, 1, 3, 1), (56, 144, 2, 3, 1), (28, 192, 1, 3, 2),
                    (28, 192, 2, 3, 1), (14, 384, 1, 3, 4), (14, 576, 1, 3, 2), (14, 576, 2, 3, 1), (7, 960, 1, 3, 3)],
    "EfficientNetB0": [(112, 32, 1, 3, 1), (112, 96, 2, 3, 1), (56, 144, 1, 3, 1), (56, 144, 2, 5, 1),
                       (28, 240, 1, 5, 1), (28, 240, 2, 3, 1), (14, 480, 1, 3, 2), (14, 480, 1, 5, 1),
                       (14, 672, 1, 5, 2), (14, 672, 2, 5, 1), (7, 1152, 1, 5, 3), (7, 1152, 1, 3, 1)],
}


def _other_kernels(revision: str, where: Path):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{KERNELS}"], check=True,
                            capture_output=True, text=True).stdout
    path = where / "other_conv_kernels.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("other_conv_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the other revision (a commit, a tag, HEAD~1)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--modes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from emulator_vs_tf import cpu_description  # noqa: E402  (the benchmarks' CPU line)
    from precision_sweep.emulator import numerics
    from precision_sweep.emulator.ops import _conv_kernels as this

    tiles = numerics.unit_models("cpu_and_ne", "m1").ane.accumulation
    print(cpu_description())
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        other = _other_kernels(args.against, Path(tmp))
        for model, layers in LAYERS.items():
            for mode in args.modes:
                totals = [0.0, 0.0]
                print(f"{model} {args.size}², mode {mode}: size chan stride kernel   {args.against} ms   this ms   ratio")
                for size, channels, stride, k, count in layers:
                    size = max(1, round(size * args.size / 224))
                    x = rng.uniform(-1, 1, (32, channels, size, size)).astype(np.float16).astype(np.float32)
                    w = rng.uniform(-1, 1, (channels, 1, k, k)).astype(np.float16).astype(np.float32)
                    p = k // 2
                    pads = [(p, p), (p, p)] if stride == 1 else [(p - 1, p), (p - 1, p)]
                    call = ((stride, stride), (1, 1), pads, mode, tiles.tile, tiles.ceiling or 0.0, tiles.flush_subnormals)
                    mine = this.depthwise_conv2d(x, w, *call)
                    theirs = other.depthwise_conv2d(x, w, *call)
                    if not np.array_equal(mine.view(np.uint32), theirs.view(np.uint32)):
                        sys.exit(f"different bits: {model} layer {size}² x {channels}, stride {stride}, {k}x{k}, mode {mode}")
                    times = [[], []]
                    for _ in range(args.repeats):
                        for side, kernels in enumerate((other, this)):
                            start = time.perf_counter()
                            kernels.depthwise_conv2d(x, w, *call)
                            times[side].append(time.perf_counter() - start)
                    theirs_s, mine_s = (statistics.median(t) for t in times)
                    totals[0] += theirs_s * count
                    totals[1] += mine_s * count
                    print(f"  {size:4d} {channels:5d} {stride:6d} {k}x{k} x{count}  {theirs_s * 1e3:12.2f}  {mine_s * 1e3:8.2f}"
                          f"  {mine_s / theirs_s:6.2f}", flush=True)
                print(f"  all layers: {totals[0] * 1e3:.0f} ms -> {totals[1] * 1e3:.0f} ms, {totals[1] / totals[0]:.2f}x "
                      "(same bits)", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
