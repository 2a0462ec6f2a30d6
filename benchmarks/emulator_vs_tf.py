"""Emulator vs TensorFlow inference time and peak memory (MobileNetV2, ResNet50).

For each model (random weights, 96x96 input, batch 32) this converts an fp32 and an fp16
ML program, times TF inference (``model(x, training=False)`` after warm-up, best of a few)
and the emulator on the fp32 program (``cpu_only``) and on the fp16 program under each
profile, and prints time ratios emulator/TF. Peak memory is the ``tracemalloc`` peak of
numpy allocations during the emulator's warm-up prediction (numpy reports its buffers to
tracemalloc), next to the process RSS high-water mark. The slow fp16-accumulation profile
(``cpu_and_ne``) is timed once after its warm-up.

Timings are wall-clock: on a machine shared with other CPU-heavy processes both TF and the
(multi-threaded BLAS) emulator slow down, unevenly; compare ratios from a quiet machine.

Usage::

    PYTHONPATH=src python benchmarks/emulator_vs_tf.py [--models MobileNetV2 ResNet50]
        [--batch 32] [--size 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

PROFILES = ("cpu_only", "cpu_and_gpu", "cpu_and_ne")


def best_time(fn, repeats, warm_up=True):
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mib(fn):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV2", "ResNet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import _emu_helpers as H
    from precision_sweep.emulator import Emulator

    rows = []
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(args.size, args.size, 3), classes=1000
        )
        shape = (args.batch, args.size, args.size, 3)
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        tensor = tf.constant(x)
        infer = tf.function(lambda t: model(t, training=False))
        t_tf = best_time(lambda: infer(tensor).numpy(), args.repeats)
        print(f"{name}: TF {t_tf * 1000:.0f} ms  (RSS high-water {rss_mib():.0f} MiB)", flush=True)
        programs = {p: H.convert(model, [shape], precision=p) for p in ("fp32", "fp16")}
        runs = [("fp32", "cpu_only")] + [("fp16", p) for p in PROFILES]
        for precision, units in runs:
            emu = Emulator(programs[precision], compute_units=units)
            feeds = {emu.input_names[0]: x}
            peak = peak_mib(lambda: emu.predict(feeds))  # doubles as the warm-up
            repeats = 1 if units == "cpu_and_ne" else args.repeats
            t_emu = best_time(lambda: emu.predict(feeds), repeats, warm_up=False)
            ratio = t_emu / t_tf
            rows.append((name, precision, units, t_emu, ratio, peak))
            print(
                f"{name}: emulator {precision} {units:<12} {t_emu * 1000:7.0f} ms  "
                f"ratio {ratio:5.2f}  peak {peak:6.0f} MiB  (RSS high-water {rss_mib():.0f} MiB)",
                flush=True,
            )
    print("\nmodel         program profile       time_ms  emu/TF  peak_MiB")
    for name, precision, units, t_emu, ratio, peak in rows:
        print(f"{name:<13} {precision:<7} {units:<12} {t_emu * 1000:8.0f} {ratio:7.2f} {peak:9.0f}")
    for name, precision, units, _, ratio, _ in rows:
        limit = 2.0 if precision == "fp32" else (3.0 if units == "cpu_only" else None)
        if limit is not None:
            status = "ok" if ratio <= limit else "ABOVE TARGET"
            print(f"target {name} {precision} {units}: {ratio:.2f} <= {limit} {status}")


if __name__ == "__main__":
    main()
