"""The Neural Engine's conv products before and after folding a batch into one product, in one
process.

Up to d980d58~1 an fp16-model conv (groups 1) multiplied its weights (C_out, K) with each
image's tap-major columns (N, K, positions): ``tiles_matmul`` transposed both operands and the
result when an image had fewer positions than output channels, and convs of at most 16
positions folded the batch through a transposed copy of the columns; the result was made
contiguous before the bias. Now, when an image has fewer positions than output channels,
im2col writes the columns of all images side by side (K, N * positions), and the product is
the weights times that, as it is (transposed only below 256 columns), its result read back per
image by the bias pass; wider images stay one product each. The tiles kernel also runs the
terms past its last step of 16 through its unrolled kernel now (they took a scalar loop).

For conv shapes of ResNet50 and MobileNetV2 at 96x96 (batch 32) this times, best of a few:

* ``old``: the older revision's ``tiles_matmul`` (its modules' source loaded from ``git show``)
  as that conv called it, plus the copies it made (the fold's transposed columns, the
  contiguous result);
* ``new``: the current ``tiles_matmul`` as conv calls it now (folded columns are made by
  im2col in place, so not timed);

and prints the ratio new / old per shape and over all shapes (weighted by each shape's count
of convs in the model). Both with ``ceiling=0`` (the untracked kernel, as the bound check
allows on these data). Usage::

    python benchmarks/tiles_conv_products.py [--against d980d58~1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from emulator_vs_tf import best_time  # noqa: E402  (the benchmarks' one timer)

from precision_sweep.emulator.ops import _accumulate_kernels as new  # noqa: E402

PACKAGE = "src/precision_sweep/emulator/ops"
FOLD_MAX_POSITIONS = 16  # the older conv's fold threshold
# (model, C_out, K, positions per image, convs of this shape in the model at 96x96)
SHAPES = [
    ("ResNet50", 64, 147, 2304, 1),
    ("ResNet50", 64, 576, 576, 3),
    ("ResNet50", 256, 64, 576, 4),
    ("ResNet50", 128, 1152, 144, 4),
    ("ResNet50", 512, 128, 144, 4),
    ("ResNet50", 256, 2304, 36, 6),
    ("ResNet50", 1024, 256, 36, 6),
    ("ResNet50", 256, 1024, 36, 5),
    ("ResNet50", 512, 4608, 9, 3),
    ("ResNet50", 2048, 512, 9, 3),
    ("MobileNetV2", 32, 27, 2304, 1),
    ("MobileNetV2", 144, 24, 576, 2),
    ("MobileNetV2", 576, 96, 36, 3),
    ("MobileNetV2", 960, 160, 9, 3),
]


def load_old(revision: str):
    """The older revision's kernel module and its generated unrolled kernel, imported under
    other names (its imports of the package's other modules resolve to the current ones,
    unchanged since)."""
    folder = Path(tempfile.mkdtemp(prefix="tiles-old-"))
    for name in ("_accumulate_kernels", "_tiles_unrolled"):
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{PACKAGE}/{name}.py"], check=True,
                                capture_output=True, text=True).stdout
        source = source.replace("precision_sweep.emulator.ops._tiles_unrolled", "old_tiles_unrolled")
        (folder / f"old{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_accumulate_kernels")


def old_product(old, w, cols):
    """The older conv's product of w (C_out, K) with cols (N, K, P), to a contiguous (N, C_out, P)."""
    n, k, p = cols.shape
    if p <= FOLD_MAX_POSITIONS:
        folded = np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(k, -1)
        y = old.tiles_matmul(w, folded).reshape(-1, n, p).transpose(1, 0, 2)
    else:
        y = old.tiles_matmul(w, cols)
    return np.ascontiguousarray(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="d980d58~1")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    old = load_old(args.against)
    rng = np.random.default_rng(0)
    totals = {}
    print(f"{'model':<12} {'C_out':>5} {'K':>5} {'pos':>5}  {'old ms':>8} {'new ms':>8}  new/old")
    for model, c_out, k, positions, count in SHAPES:
        w = (rng.standard_normal((c_out, k)) * 0.05).astype(np.float16).astype(np.float32)
        cols = rng.standard_normal((args.batch, k, positions)).astype(np.float16).astype(np.float32)
        if positions < c_out:  # as conv folds now
            operand = np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(k, -1)
            got = new.tiles_matmul(w, operand).reshape(c_out, args.batch, positions).transpose(1, 0, 2)
        else:
            operand = cols
            got = new.tiles_matmul(w, operand)
        want = old_product(old, w, cols)
        assert np.array_equal(want.view(np.uint32), np.ascontiguousarray(got).view(np.uint32))
        t_old = t_new = np.inf
        for _ in range(args.repeats):  # alternated, so that a busy phase hits both
            t_old = min(t_old, best_time(lambda: old_product(old, w, cols), 1))
            t_new = min(t_new, best_time(lambda: new.tiles_matmul(w, operand), 1))
        before, after = totals.get(model, (0.0, 0.0))
        totals[model] = (before + count * t_old, after + count * t_new)
        print(f"{model:<12} {c_out:5d} {k:5d} {positions:5d}  {t_old * 1e3:8.1f} {t_new * 1e3:8.1f}  {t_new / t_old:6.2f}",
              flush=True)
    for model, (t_old, t_new) in totals.items():
        print(f"{model} (weighted by convs per shape): old {t_old * 1e3:.0f} ms, new {t_new * 1e3:.0f} ms, "
              f"new/old {t_new / t_old:.2f}")


if __name__ == "__main__":
    main()
