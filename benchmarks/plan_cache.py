"""What the plan cache saves a worker (issue 13, item 4: warm workers are cheap).

``Emulator(path)`` compiles the package's MIL program, which needs coremltools (and so
TensorFlow); ``Emulator(path, plan_cache=...)`` reads a stored plan instead
(:mod:`precision_sweep.emulator.plan_store`). For the built-in digits CNN and MobileNetV2
(alpha 0.35, random weights, 96x96), converted at fp16 for iOS17 and run under
``compute_units=all`` on m5, this script measures in fresh processes and in one run:

* ``Emulator(path)``: compiled, coremltools already imported (the compile alone), compiled in
  a fresh process (coremltools' import included, what a cold worker pays), and loaded from a
  warm cache;
* imports: the cached path's (``precision_sweep.emulator`` and its kernels) vs
  ``import coremltools``;
* a whole worker: a fresh ``python -c`` that builds the emulator and predicts one batch,
  uncached vs cached;

and prints the ratios. Times are the best of ``--repeats`` runs. Usage::

    python benchmarks/plan_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
EMULATOR_IMPORTS = "from precision_sweep.emulator import Emulator; from precision_sweep.emulator import ops"

# Prints the seconds ``Emulator(...)`` took, after the imports it is given.
CONSTRUCT = """
import time
{imports}
from precision_sweep.emulator import Emulator
start = time.perf_counter()
Emulator({path!r}, "all", "m5", plan_cache={cache!r})
print(time.perf_counter() - start)
"""
WORKER = """
import numpy as np
from precision_sweep.emulator import Emulator
emulator = Emulator({path!r}, "all", "m5", plan_cache={cache!r})
emulator.predict({{name: np.zeros(shape, np.float32) for name, (shape, _) in emulator.plan.inputs.items()}})
"""


def run(code: str) -> tuple[float, str]:
    """Wall seconds of ``python -c code`` in a fresh process, and its stdout."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], check=False, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"python -c failed ({result.returncode}):\n{code}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def best_wall(code: str, repeats: int) -> float:
    return min(run(code)[0] for _ in range(repeats))


def best_inner(code: str, repeats: int) -> float:
    return min(float(run(code)[1].split()[-1]) for _ in range(repeats))


def build_packages(folder: Path) -> dict[str, Path]:
    """The digits CNN (as the built-in builder makes it, one epoch on random digits) and
    MobileNetV2 at 96x96, converted at fp16 for iOS17."""
    from types import SimpleNamespace

    import coremltools as ct
    import tensorflow as tf

    from precision_sweep.data.builtin_models import digits_cnn, mobilenet_v2

    rng = np.random.default_rng(0)
    datasets = {
        "digits_cnn": SimpleNamespace(x_train=rng.random((64, 8, 8, 1), np.float32), y_train=rng.integers(0, 10, 64),
                                      n_classes=10),
        "mobilenet_v2": SimpleNamespace(x_train=rng.random((2, 96, 96, 3), np.float32), y_train=np.zeros(2),
                                        n_classes=10),
    }
    packages = {}
    for name, builder in (("digits_cnn", digits_cnn), ("mobilenet_v2", mobilenet_v2)):
        dataset = datasets[name]
        model = builder(dataset, 1, 0)
        shape = (1, *dataset.x_train.shape[1:])
        concrete = tf.function(lambda x, m=model: m(x, training=False)).get_concrete_function(
            tf.TensorSpec(shape, tf.float32, name="image"))
        mlmodel = ct.convert([concrete], source="tensorflow", convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS17, compute_precision=ct.precision.FLOAT16,
                             inputs=[ct.TensorType(name="image", shape=shape)])
        packages[name] = folder / f"{name}.mlpackage"
        mlmodel.save(str(packages[name]))
    return packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("converting the digits CNN and MobileNetV2 (96x96) ...", flush=True)
        packages = build_packages(folder)
        rows = []
        for name, path in packages.items():
            cache = str(folder / f"plans-{name}")
            run(CONSTRUCT.format(imports="", path=str(path), cache=cache))  # fills the cache
            compile_only = best_inner(CONSTRUCT.format(imports="import coremltools", path=str(path), cache=None), repeats)
            compile_cold = best_inner(CONSTRUCT.format(imports="", path=str(path), cache=None), repeats)
            load = best_inner(CONSTRUCT.format(imports="", path=str(path), cache=cache), repeats)
            worker_uncached = best_wall(WORKER.format(path=str(path), cache=None), repeats)
            worker_cached = best_wall(WORKER.format(path=str(path), cache=cache), repeats)
            rows.append((name, compile_only, compile_cold, load, worker_uncached, worker_cached))
        import_cached = best_wall(EMULATOR_IMPORTS, repeats)
        import_coremltools = best_wall("import coremltools", repeats)
        python_alone = best_wall("pass", repeats)

    print(f"\nbest of {repeats}, fresh processes, compute_units=all device=m5\n")
    print(f"{'model':14}{'compile':>10}{'cold compile':>14}{'cached load':>13}{'compile/load':>14}"
          f"{'worker uncached':>17}{'worker cached':>15}{'ratio':>8}")
    for name, compile_only, compile_cold, load, worker_uncached, worker_cached in rows:
        print(f"{name:14}{compile_only:>9.3f}s{compile_cold:>13.3f}s{load:>12.3f}s{compile_only / load:>13.1f}x"
              f"{worker_uncached:>16.2f}s{worker_cached:>14.2f}s{worker_uncached / worker_cached:>7.1f}x")
    print("\n(compile: Emulator(path) with coremltools already imported; cold compile: the same in a fresh "
          "process, coremltools' import included; worker: python -c that builds the emulator and predicts once)")
    print(f"\nimport, cached path ({EMULATOR_IMPORTS}): {import_cached:.2f}s wall")
    print(f"import coremltools: {import_coremltools:.2f}s wall  ({import_coremltools / import_cached:.1f}x)")
    print(f"python alone: {python_alone:.2f}s wall; net of it: "
          f"{import_cached - python_alone:.2f}s vs {import_coremltools - python_alone:.2f}s "
          f"({(import_coremltools - python_alone) / max(import_cached - python_alone, 1e-9):.1f}x)")


if __name__ == "__main__":
    main()
