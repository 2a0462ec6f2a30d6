"""How fast the fp16 accumulation models can be on this CPU, against a BLAS product.

The ANE numerics model (``emulator/numerics.py``, ``ops/_accumulate_kernels.py``) adds the
products of a 4-term tile in order, rounding each partial sum to fp16: three fp16 roundings
per four products, and each rounding is a ``vcvtps2ph``/``vcvtph2ps`` round trip on x86 CPUs
without AVX512-FP16. A BLAS product has no such step. This script times, in one process and
on the same (M, K) x (K, N) product, by default one as a conv runs it (64 output channels,
576 terms: a 3x3 conv over 64 channels, and 4608 output positions of the batch as columns):

* ``sgemm``: ``np.matmul`` in float32 (OpenBLAS, all cores);
* ``tiles``: the emulator's tiles kernel (``tiles_matmul``, all cores);
* ``bound``: the tile model's arithmetic alone, on data that stays in L1 cache (the same count
  of products and roundings, no loads from the operands), i.e. a floor for any implementation
  of this model with the CPU's conversion instructions.

and the same for the CPU model's fp16 running sum (``cpu_only`` FP16, one fp16 rounding per
product, a chain that cannot be reordered):

* ``fp16 running-sum kernel``: ``fp16_matmul`` (all cores);
* ``running-sum arithmetic alone``: one multiply-add and one rounding per product on data in L1.

and prints each as a ratio to ``sgemm``.

With ``--models``, it then applies the floors to whole models: for each model and input size
(batch 32, random weights, as ``emulator_vs_tf.py`` builds them) it counts the products that
the emulator's FP32, ``cpu_only`` FP16 and ``cpu_and_ne`` (M1) runs compute through their
accumulators' matmul (convs, dense layers, attention; not depthwise convs, which run their own
kernel), times the time spent there, and prints, next to the model's TF time:

* ``products``: the count, in billions;
* ``in matmuls``: the run's time inside those products (FP32: OpenBLAS);
* ``floor``: the products at the floor's rate above, the faster of the kernel and its
  arithmetic alone (FP32: the BLAS time itself);
* ``floor/TF`` and ``emulator/TF``: the lowest ratio this model's profile can reach with this
  arithmetic on this CPU, and the ratio it has (one run, best of 3 calls).

Usage::

    python benchmarks/tile_rounding_bound.py [--shape 64 576 4608]
        [--models ResNet50 ViT] [--sizes 224 96] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "emulator"))

from precision_sweep.emulator.ops._accumulate_kernels import fp16_matmul, tiles_matmul  # noqa: E402
from precision_sweep.emulator.ops._half import round_half  # noqa: E402
from emulator_vs_tf import best_time, blas_kernels, cpu_description  # noqa: E402  (the benchmarks' one timer)

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
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 576, 4608], metavar=("M", "K", "N"))
    parser.add_argument("--models", nargs="*", default=[], help="Keras applications by name, or ViT")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    parser.add_argument("--batch", type=int, default=32)
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
    print(f"CPU: {cpu_description()}")
    print(f"BLAS: {blas_kernels()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"({m}, {k}) x ({k}, {n}): {products / 1e6:.0f} M products")
    print(f"sgemm (float32 BLAS)        {sgemm * 1e3:8.2f} ms   1.00x")
    print(f"tiles kernel (ANE model)    {tiles * 1e3:8.2f} ms  {tiles / sgemm:5.2f}x")
    print(f"tile arithmetic alone       {bound * 1e3:8.2f} ms  {bound / sgemm:5.2f}x  (floor for this model)")
    running = best_time(lambda: fp16_matmul(a, b), 5)
    running_bound = best_time(lambda: _arithmetic(weights, values, steps // chunks, chunks, True), 5)
    print(f"fp16 running-sum kernel     {running * 1e3:8.2f} ms  {running / sgemm:5.2f}x  (cpu_only FP16)")
    print(f"running-sum arithmetic      {running_bound * 1e3:8.2f} ms  {running_bound / sgemm:5.2f}x  (floor for this model)")
    if args.models:
        # the floor is the faster of the kernel and its arithmetic alone (on an Intel Xeon with
        # AVX-512 FP16 the running-sum kernel beats the L1 loop)
        per_product = {"fp16": min(running, running_bound) / products, "tiles": min(tiles, bound) / products}
        model_floors(args.models, args.sizes, args.batch, per_product)


class _CountedProducts:
    """Wraps ``Accumulator.matmul``: the products it computes and the time spent in it."""

    def __init__(self):
        from precision_sweep.emulator.ops._accumulate import Accumulator

        self.products = 0
        self.seconds = 0.0
        self._depth = 0
        self._original = Accumulator.matmul
        counter = self

        def counted(accumulator, a, b, *args, **kwargs):
            counter._depth += 1
            start = time.perf_counter()
            try:
                return counter._original(accumulator, a, b, *args, **kwargs)
            finally:
                counter._depth -= 1
                if counter._depth == 0:  # 1-D operands come back through matmul itself
                    counter.seconds += time.perf_counter() - start
                    a, b = np.asarray(a), np.asarray(b)
                    a2 = a[None, :] if a.ndim == 1 else a
                    b2 = b[:, None] if b.ndim == 1 else b
                    batch = int(np.prod(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), dtype=np.int64))
                    counter.products += batch * a2.shape[-2] * a2.shape[-1] * b2.shape[-1]

        Accumulator.matmul = counted

    def close(self):
        from precision_sweep.emulator.ops._accumulate import Accumulator

        Accumulator.matmul = self._original


def model_floors(names, sizes, batch, per_product):
    """The floors applied to whole models (module docstring)."""
    import tensorflow as tf

    import _emu_helpers as helpers
    from emulator_vs_tf import build_model
    from precision_sweep.emulator import Emulator

    print("\nmodel           size profile            products  TF ms  in matmuls ms  floor ms  floor/TF  emulator/TF")
    for size in sizes:
        for name in names:
            shape = (batch, size, size, 3)
            x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
            tensor = tf.constant(x)
            model = build_model(name, size)
            infer = tf.function(lambda t: model(t, training=False))
            t_tf = best_time(lambda: infer(tensor).numpy(), 3)
            for precision, units, kind in (("fp32", "cpu_only", "blas"), ("fp16", "cpu_only", "fp16"), ("fp16", "cpu_and_ne", "tiles")):
                emulator = Emulator(helpers.convert(model, [shape], precision=precision), compute_units=units, device="m1")
                feeds = {emulator.input_names[0]: x}
                t_emu = best_time(lambda: emulator.predict(feeds), 3)
                t_tf = min(t_tf, best_time(lambda: infer(tensor).numpy(), 3, warm_up=False))
                counter = _CountedProducts()
                try:
                    emulator.predict(feeds)
                finally:
                    counter.close()
                floor = counter.seconds if kind == "blas" else counter.products * per_product[kind]
                label = f"{precision} {units}"
                print(f"{name:<15} {size:4d} {label:<18} {counter.products / 1e9:7.2f} G {t_tf * 1e3:6.0f} "
                      f"{counter.seconds * 1e3:14.0f} {floor * 1e3:9.0f} {floor / t_tf:9.2f} {t_emu / t_tf:12.2f}", flush=True)


if __name__ == "__main__":
    main()
