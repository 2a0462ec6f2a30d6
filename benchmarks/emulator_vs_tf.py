"""Emulator vs TensorFlow inference time and peak memory (MobileNetV2, ResNet50, EfficientNetB0, ViT).

``--models`` takes Keras applications by name (``keras.applications.<name>``) and ``ViT``: a small
vision transformer built from Keras layers (16x16 patch embedding by a strided Conv2D, learned
position embedding, 4 pre-norm encoder blocks of ``MultiHeadAttention`` (4 heads, width 192),
``LayerNormalization`` and an MLP with tanh-approximated GELU (Keras' exact GELU lowers to
``erfc``, which coremltools 9 does not convert), mean pooling and a 1000-class head).

For each model (random weights, batch 32) and input size (96x96 and 224x224) this converts an
fp32 and an fp16 ML program and a NeuralNetwork ``.mlmodel`` (iOS14, fp32 weights: fp32 compute
on the CPU, fp16 on the GPU and the Neural Engine, program ``nn`` in the table, held to the
targets of the ML program profile of the same unit), times TF inference (``model(x, training=False)`` in a
``tf.function``, after warm-up, best of a few) and the emulator on the fp32 program and on the
fp16 program under every compute-unit model and Neural Engine generation, and prints time
ratios emulator/TF. Targets (issue 26, judged on the median of 3 runs): fp32 <= 1.0, fp16
``cpu_only`` and ``cpu_and_gpu`` <= 1.5, the ANE models (``cpu_and_ne``, ``all``) <= 2.5; peak
memory <= 2x TF's (issue 11).

Peak memory is measured the same way for both sides, as the memory it takes to load the model
and run it: freed heap memory is returned to the system (``malloc_trim``), the process's
resident-set high-water mark is reset (``/proc/self/clear_refs``), then the side loads its
model (TF: builds the Keras model and traces the inference function; emulator: loads the
program) and runs a warm-up and one more inference. The peak is the growth of the high-water
mark over the resident set before. It counts every allocation (TF's allocator and weights,
numpy buffers, numba and BLAS scratch), not just numpy's. TF's side runs in a fresh process per
model (``--tf-peak-of``), after a tiny model has started TF's runtime: in one process TF's
allocator keeps the memory of the models before, and a later model's peak read as little as
3-48 MiB. The emulator's side runs in this process (it keeps nothing between programs).

Timings are wall-clock: on a machine shared with other CPU-heavy processes both sides slow
down, unevenly; compare ratios from a quiet machine. TF is timed again after every emulator
run and each ratio uses the best TF time seen so far, so slow phases do not favour one side. The BLAS kernel set in use is printed:
where ``OPENBLAS_CORETYPE`` pins an older kernel set than the CPU supports (set on some
machines for old OpenBLAS builds), unset it for this command alone to compare with TF's
oneDNN on equal terms::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/emulator_vs_tf.py

Usage::

    python benchmarks/emulator_vs_tf.py [--models MobileNetV2 ResNet50 EfficientNetB0 ViT]
        [--batch 32] [--sizes 96 224] [--repeats 3] [--devices m1 m2 m5]
        [--formats mlprogram neuralnetwork]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

FP16_UNITS = ("cpu_only", "cpu_and_gpu")
ANE_UNITS = ("cpu_and_ne", "all")
TARGETS = {"fp32": 1.0, "fp16": 1.5, "ane": 2.5}


def best_time(fn, repeats, warm_up=True):
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mib(fn):
    """``(fn(), peak resident memory that fn adds in MiB)`` (see module docstring)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear:
        clear.write("5")  # reset VmHWM to the current VmRSS
    before = _status_kib("VmRSS")
    result = fn()
    return result, (_status_kib("VmHWM") - before) / 1024


# The CPU features the ratios move with (TF's oneDNN and numpy's kernels pick their code by them).
CPU_FLAGS = ("avx2", "avx512f", "avx512_fp16", "f16c", "amx_tile")


def cpu_description() -> str:
    """The CPU's model name, family and model numbers (a VM's model name can be as vague as
    "Intel(R) Xeon(R) Processor") and which of :data:`CPU_FLAGS` it has (``/proc/cpuinfo``, as
    lscpu)."""
    fields, flags = {}, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "model name"):
                    fields.setdefault(key, value.strip())
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    name = fields.get("model name", "unknown CPU")
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return f"{name}, {os.cpu_count()} CPUs ({shown})"


def blas_kernels() -> str:
    from threadpoolctl import threadpool_info

    found = [f"{i['internal_api']} {i.get('architecture')} ({i['num_threads']} threads)" for i in threadpool_info()]
    return ", ".join(found) or "none found"


def _runs(devices, formats):
    """(program, compute units, device): the ML programs' profiles, then the NeuralNetwork
    file's (one fp32-weight .mlmodel, computing fp32 on the CPU and fp16 elsewhere)."""
    if "mlprogram" in formats:
        yield "fp32", "cpu_only", "m1"
        for units in FP16_UNITS:
            yield "fp16", units, "m1"
        for units in ANE_UNITS:
            for device in devices:
                yield "fp16", units, device
    if "neuralnetwork" in formats:
        for units in ("cpu_only", "cpu_and_gpu"):
            yield "nn", units, "m1"
        for units in ANE_UNITS:
            for device in devices:
                yield "nn", units, device


def vision_transformer(size: int, width: int = 192, depth: int = 4, heads: int = 4, patch: int = 16, classes: int = 1000):
    """The small ViT of the module docstring, random weights."""
    import keras

    layers = keras.layers
    image = keras.Input((size, size, 3))
    tokens = layers.Reshape((-1, width))(layers.Conv2D(width, patch, strides=patch)(image))
    count = (size // patch) ** 2
    tokens = tokens + layers.Embedding(count, width)(keras.ops.arange(count))
    for _ in range(depth):
        normed = layers.LayerNormalization(epsilon=1e-6)(tokens)
        tokens = tokens + layers.MultiHeadAttention(heads, width // heads)(normed, normed)
        normed = layers.LayerNormalization(epsilon=1e-6)(tokens)
        hidden = layers.Dense(width * 4)(normed)
        hidden = layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(hidden)
        tokens = tokens + layers.Dense(width)(hidden)
    pooled = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(tokens))
    return keras.Model(image, layers.Dense(classes, activation="softmax")(pooled), name="ViT")


def build_model(name: str, size: int):
    """``name`` with random weights at ``size`` x ``size`` x 3: a Keras application or ``ViT``."""
    import keras

    keras.utils.set_random_seed(0)
    if name == "ViT":
        return vision_transformer(size)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=1000)


def _nn_file(model, shape) -> Path:
    """``model`` as a NeuralNetwork .mlmodel (iOS14, fp32 weights) in a temporary folder."""
    import tempfile

    import coremltools as ct

    path = Path(tempfile.mkdtemp(prefix="emulator-vs-tf-")) / "model.mlmodel"
    ct.convert(model, inputs=[ct.TensorType(shape=shape)], convert_to="neuralnetwork",
               minimum_deployment_target=ct.target.iOS14).save(str(path))
    return path


def _load_and_run_tf(name: str, size: int, tensor):
    """Build ``name`` at ``size``, trace its inference function and run it twice."""
    import tensorflow as tf

    model = build_model(name, size)
    infer = tf.function(lambda t: model(t, training=False))
    infer(tensor).numpy()
    infer(tensor).numpy()
    return model, infer


def _tf_peak_here(name: str, size: int, batch: int) -> float:
    """TF's peak for one model in this fresh process, after a tiny model has started TF's
    runtime (its thread pools and kernel caches are not the model's memory)."""
    import keras
    import tensorflow as tf

    tiny = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2)])
    warm = tf.function(lambda t: tiny(t, training=False))
    warm(tf.zeros((2, 8, 8, 3))).numpy()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    tensor = tf.constant(x)
    _, peak = peak_mib(lambda: _load_and_run_tf(name, size, tensor))
    return peak


def tf_peak_mib(name: str, size: int, batch: int) -> float:
    """:func:`_tf_peak_here` in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, __file__, "--tf-peak-of", name, str(size), str(batch)],
                            capture_output=True, text=True, env=env, check=True)
    return float(result.stdout.split()[-1])


def _target(precision, units):
    if precision == "nn":  # the same targets as the ML program profile of the same unit
        return _target("fp32" if units == "cpu_only" else "fp16", units)
    if precision == "fp32":
        return TARGETS["fp32"]
    if units in ANE_UNITS:
        return TARGETS["ane"]
    return TARGETS["fp16"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV2", "ResNet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["m1", "m2", "m5"])
    parser.add_argument("--formats", nargs="+", default=["mlprogram", "neuralnetwork"],
                        choices=["mlprogram", "neuralnetwork"])
    parser.add_argument("--tf-peak-of", nargs=3, metavar=("MODEL", "SIZE", "BATCH"),
                        help="print TF's peak for one model and exit (run in a fresh process by the benchmark)")
    args = parser.parse_args(argv)
    if args.tf_peak_of:
        name, size, batch = args.tf_peak_of
        print(_tf_peak_here(name, int(size), int(batch)))
        return

    import tensorflow as tf

    import _emu_helpers as H
    from precision_sweep.convert.converter import freeze_library_objects

    freeze_library_objects()  # conversions skip rescanning TF's objects (as in a job)
    from precision_sweep.emulator import Emulator

    print(f"CPU: {cpu_description()}")
    print(f"BLAS: {blas_kernels()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    rows = []
    for size in args.sizes:
        for name in args.models:
            shape = (args.batch, size, size, 3)
            x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
            tensor = tf.constant(x)

            tf_peak = tf_peak_mib(name, size, args.batch)
            model, infer = _load_and_run_tf(name, size, tensor)
            t_tf = best_time(lambda: infer(tensor).numpy(), args.repeats)
            print(f"{name} {size}x{size}: TF {t_tf * 1000:.0f} ms  peak {tf_peak:.0f} MiB", flush=True)
            programs = {p: H.convert(model, [shape], precision=p) for p in ("fp32", "fp16")} if "mlprogram" in args.formats else {}
            if "neuralnetwork" in args.formats:
                programs["nn"] = _nn_file(model, shape)
            for precision, units, device in _runs(args.devices, args.formats):
                def load_and_run_emulator():
                    emu = Emulator(programs[precision], compute_units=units, device=device)
                    feeds = {emu.input_names[0]: x}
                    emu.predict(feeds)  # warm-up: compiles or loads the numba kernels
                    emu.predict(feeds)
                    return emu, feeds

                (emu, feeds), peak = peak_mib(load_and_run_emulator)
                t_emu = best_time(lambda: emu.predict(feeds), args.repeats, warm_up=False)
                # TF again, right after: on a shared machine both sides drift, so each ratio
                # uses the best TF time seen so far, next to this emulator run
                t_tf = min(t_tf, best_time(lambda: infer(tensor).numpy(), args.repeats, warm_up=False))
                label = units if units in FP16_UNITS or (precision == "fp32") or (precision == "nn" and units in FP16_UNITS) else f"{units}/{device}"
                rows.append((name, size, precision, label, _target(precision, units), t_emu, t_emu / t_tf, peak, peak / tf_peak))
                print(
                    f"{name} {size}: emulator {precision} {label:<15} {t_emu * 1000:7.0f} ms  "
                    f"ratio {t_emu / t_tf:5.2f}  peak {peak:6.0f} MiB ({peak / tf_peak:.2f}x TF)",
                    flush=True,
                )
            gc.collect()
    print("\nmodel         size program profile          time_ms  emu/TF  target  peak/TF")
    for name, size, precision, label, target, t_emu, ratio, peak, peak_ratio in rows:
        mark = "" if target is None else (" ok" if ratio <= target else " ABOVE TARGET")
        print(f"{name:<13} {size:4d} {precision:<7} {label:<16} {t_emu * 1000:8.0f} {ratio:7.2f} "
              f"{'-' if target is None else target:>7} {peak_ratio:8.2f}{mark}")
    above = [r for r in rows if r[4] is not None and r[6] > r[4]] + [r for r in rows if r[8] > 2.0]
    print(f"\n{len(rows)} runs; {len(above)} above a target (time, or peak memory > 2x TF)")


if __name__ == "__main__":
    main()
