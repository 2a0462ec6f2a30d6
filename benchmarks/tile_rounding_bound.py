"""How fast the fp16 accumulation models can be on this CPU, against a BLAS product.

The ANE numerics model (``emulator/numerics.py``, ``ops/_accumulate_kernels.py``) adds the
products of a 4-term tile in order, rounding each partial sum to fp16: three fp16 roundings
per four products, and each rounding is a ``vcvtps2ph``/``vcvtph2ps`` round trip on x86 CPUs
without AVX512-FP16. A BLAS product has no such step. This script times, in one process and
on the same (M, K) x (K, N) product:

* ``sgemm``: ``np.matmul`` in float32 (OpenBLAS, all cores);
* ``tiles``: the emulator's tiles kernel (``tiles_matmul``, all cores);
* ``bound``: the tile model's arithmetic alone, on data that stays in L1 cache (the same count
  of products and roundings, no loads from the operands), i.e. a floor for any implementation
  of this model with the CPU's conversion instructions.

and the same for the CPU model's fp16 running sum (``cpu_only`` FP16, one fp16 rounding per
product, a chain that cannot be reordered):

* ``fp16 running-sum kernel``: ``fp16_matmul`` (all cores);
* ``running-sum arithmetic alone``: one multiply-add and one rounding per product on data in L1.

and prints each as a ratio to ``sgemm``. Usage::

    python benchmarks/tile_rounding_bound.py [--shape 4608 576 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from precision_sweep.emulator.ops._accumulate_kernels import fp16_matmul, tiles_matmul  # noqa: E402
from precision_sweep.emulator.ops._half import round_half  # noqa: E402
from emulator_vs_tf import best_time  # noqa: E402  (the benchmarks' one timer)

LANES = 64  # outputs kept in registers/L1 by the arithmetic-only loop


@njit(cache=True, parallel=True, fastmath={"contract"})
def _arithmetic(weights, values, steps, chunks, running):
    """``chunks`` x ``steps`` groups of 4 products on LANES outputs, as the tiles model adds
    them (``running`` false: 4 multiply-adds, 3 fp16 roundings, 1 float32 accumulation per
    tile) or the CPU model (true: each product added to an fp16 running sum and rounded)."""
    total = np.zeros(chunks, dtype=np.float32)
    for c in prange(chunks):
        acc = np.zeros(LANES, dtype=np.float32)
        for s in range(steps):
            w0, w1, w2, w3 = weights[s % 16, 0], weights[s % 16, 1], weights[s % 16, 2], weights[s % 16, 3]
            for j in range(LANES):
                x = values[j]
                t = round_half(acc[j] + w0 * x) if running else w0 * x
                t = round_half(t + w1 * x)
                t = round_half(t + w2 * x)
                t = round_half(t + w3 * x)
                acc[j] = t if running else acc[j] + t
        total[c] = acc.sum()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[4608, 576, 64], metavar=("M", "K", "N"))
    args = parser.parse_args()
    m, k, n = args.shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float16).astype(np.float32)
    b = (rng.standard_normal((k, n)) * 0.05).astype(np.float16).astype(np.float32)
    weights = b[:64].reshape(16, -1)[:, :4].copy()
    values = a[0, :LANES].copy()
    products = m * k * n
    steps = products // (4 * LANES)  # tiles per lane over all chunks
    chunks = 64
    sgemm = best_time(lambda: a @ b, 5)
    tiles = best_time(lambda: tiles_matmul(a, b), 5)
    bound = best_time(lambda: _arithmetic(weights, values, steps // chunks, chunks, False), 5)
    print(f"({m}, {k}) x ({k}, {n}): {products / 1e6:.0f} M products")
    print(f"sgemm (float32 BLAS)        {sgemm * 1e3:8.2f} ms   1.00x")
    print(f"tiles kernel (ANE model)    {tiles * 1e3:8.2f} ms  {tiles / sgemm:5.2f}x")
    print(f"tile arithmetic alone       {bound * 1e3:8.2f} ms  {bound / sgemm:5.2f}x  (floor for this model)")
    running = best_time(lambda: fp16_matmul(a, b), 5)
    running_bound = best_time(lambda: _arithmetic(weights, values, steps // chunks, chunks, True), 5)
    print(f"fp16 running-sum kernel     {running * 1e3:8.2f} ms  {running / sgemm:5.2f}x  (cpu_only FP16)")
    print(f"running-sum arithmetic      {running_bound * 1e3:8.2f} ms  {running_bound / sgemm:5.2f}x  (floor for this model)")


if __name__ == "__main__":
    main()
