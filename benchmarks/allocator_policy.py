"""The emulator's malloc policy (``emulator/allocator.py``) against glibc's mmap threshold fixed at
1 MiB (the policy before it), in alternating processes.

Each process loads one converted program (random weights, built as ``emulator_vs_tf.py``
builds it, batch 32: the converted reshapes fix it), runs 12 predictions on different images and
then 5 more, and prints the best of those 5 and its resident set: the high-water mark the
predictions add over the loaded program, and the resident set after each of the 12 (flat when
freed memory is reused). The 1 MiB policy is the environment's
``MALLOC_MMAP_THRESHOLD_=1048576``, which the emulator leaves alone. Printed per model: each
policy's median time and memory, and their ratios (this policy / 1 MiB). Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/allocator_policy.py \\
        [--cases "MobileNetV2 224 cpu_only fp32" "EfficientNetB0 96 cpu_and_gpu fp16"] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from precision_sweep.emulator import Emulator

def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

emulator = Emulator(sys.argv[2], compute_units=sys.argv[3], device="m1")
size = int(sys.argv[4])
name = emulator.input_names[0]
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark from here on
base = rss_mib()
trail = []
for i in range(12):
    x = np.random.default_rng(i).uniform(-1, 1, (32, size, size, 3)).astype(np.float32)
    emulator.predict({name: x})
    trail.append(rss_mib() - base)
x = np.random.default_rng(0).uniform(-1, 1, (32, size, size, 3)).astype(np.float32)
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    emulator.predict({name: x})
    best = min(best, time.perf_counter() - start)
print(best, rss_mib("VmHWM") - base, *trail)
"""

POLICIES = {"reuse": {}, "mmap 1 MiB": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}


def convert(name: str, size: int, precision: str, path: Path) -> None:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "emulator"), str(ROOT / "benchmarks")]
    import keras

    import _emu_helpers as helpers
    from emulator_vs_tf import build_model

    keras.utils.set_random_seed(0)
    helpers.convert(build_model(name, size), [(32, size, size, 3)], precision=precision).save(str(path))


def run(package: Path, units: str, size: int, policy: str) -> tuple[float, float, list[float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(POLICIES[policy], TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", TIMER, str(ROOT / "src"), str(package), units, str(size)],
                            capture_output=True, text=True, env=env, check=True)
    values = [float(v) for v in result.stdout.split()[-14:]]
    return values[0], values[1], values[2:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["MobileNetV2 224 cpu_only fp32",
                                                       "EfficientNetB0 96 cpu_and_gpu fp16",
                                                       "ResNet50 224 cpu_only fp32"],
                        help='"MODEL SIZE COMPUTE_UNITS PRECISION" each')
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="allocator-policy-") as tmp:
        for case in args.cases:
            name, size, units, precision = case.split()
            package = Path(tmp) / f"{name}_{size}_{precision}.mlpackage"
            convert(name, int(size), precision, package)
            results: dict[str, list] = {policy: [] for policy in POLICIES}
            for pair in range(args.pairs):
                for policy in list(POLICIES)[:: 1 if pair % 2 == 0 else -1]:
                    results[policy].append(run(package, units, int(size), policy))
            medians = {}
            for policy, runs in results.items():
                time_ms = statistics.median(r[0] for r in runs) * 1000
                peak = statistics.median(r[1] for r in runs)
                medians[policy] = (time_ms, peak)
                trail = " ".join(f"{v:.0f}" for v in runs[-1][2])
                print(f"{case}, {policy}: {time_ms:.0f} ms (runs {min(r[0] for r in runs) * 1000:.0f}-"
                      f"{max(r[0] for r in runs) * 1000:.0f}), high-water +{peak:.0f} MiB; resident set after each "
                      f"of 12 predictions (last run): {trail} MiB", flush=True)
            (t_new, p_new), (t_old, p_old) = medians["reuse"], medians["mmap 1 MiB"]
            print(f"{case}: reuse / mmap 1 MiB: time {t_new / t_old:.2f}, high-water {p_new / max(p_old, 1):.2f}\n",
                  flush=True)


if __name__ == "__main__":
    main()
