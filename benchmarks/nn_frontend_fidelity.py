"""Fidelity of the NeuralNetwork loader against coremltools' own TF frontend tests (issue 23).

coremltools' TF1 and TF2 frontend op tests (the installed package's
``converters/mil/frontend/tensorflow/test/`` and ``.../tensorflow2/test/``) convert each case
with the neuralnetwork backend and compare Core ML's prediction with TensorFlow's. Core ML
predicts only on macOS; here the emulator predicts instead (``benchmarks/_fidelity_plugin.py``:
the saved ``.mlmodel`` under ``cpu_only``), judged by the tests' own tolerances and shape checks.

    python benchmarks/nn_frontend_fidelity.py                # 1 in 4 of the 4,936 cases, 2 workers
    python benchmarks/nn_frontend_fidelity.py --every 1      # all of them
    python benchmarks/nn_frontend_fidelity.py -k TestConcat  # a pytest -k filter

The default samples every 4th collected case (deterministic: collection order is fixed, object
addresses are kept out of the test ids): 5-10 min on two cores, where the full run took over
30 min on two shared cores (about 110 cases a minute).

Choices, each printed with the figures:

* Backend: coremltools' own switch ``PYMIL_TEST_TARGETS=neuralnetwork`` (``testing_reqs.py``),
  so every case is a ``('neuralnetwork', 'fp32')`` parametrization; compute unit CPU_ONLY (its
  default), and the emulator runs ``cpu_only``.
* ``TF_USE_LEGACY_KERAS=1``: ``test_v2_ops_tf_keras.py`` is written for Keras 2 (``tf.keras``
  layers Keras 3 dropped, such as ``LocallyConnected1D``, are used at class level); with Keras 3
  the file does not even collect. tf-keras is the Keras 2 of this TF.
* In scope: cases that reached the prediction, i.e. converted to a NeuralNetwork (a conversion
  or TensorFlow error is coremltools' or TF's, counted apart), minus random ops (Core ML's
  generator is not public). A case whose prediction passed but whose own later check failed is
  counted apart too. Passes / in scope is the figure; passes / all cases is the raw one.
* Layer types: those in the specs of the in-scope cases; a type is covered when it has an
  adapter and at least one in-scope case holding it passes; ``emitted by the backend`` is read
  from ``converters/mil/backend/nn/op_mapping.py`` (the builder calls it makes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_FILES = (
    "tensorflow2/test/test_v2_ops.py",
    "tensorflow2/test/test_v2_ops_tf_keras.py",
    "tensorflow/test/test_ops.py",
    "tensorflow/test/test_composite_ops.py",
)
IN_SCOPE_STAGES = ("predict", "emulator_load", "emulator_run", "compare")
RANDOM = re.compile(r"random|Random|categorical|Multinomial|Dropout")


def frontend_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("coremltools")
    return Path(spec.origin).parent / "converters" / "mil" / "frontend"


def run_tests(args, records: Path) -> tuple[list[str], float]:
    frontend = frontend_dir()
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "_fidelity_plugin", "-q",
               "-o", "addopts=", f"--fidelity-every={args.every}", "-n", str(args.workers),
               *[str(frontend / f) for f in args.files]]
    if args.k:
        command += ["-k", args.k]
    env = dict(os.environ, PYMIL_TEST_TARGETS="neuralnetwork", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3",
               FIDELITY_RECORDS=str(records),
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    shown = ["PYMIL_TEST_TARGETS=neuralnetwork", "TF_USE_LEGACY_KERAS=1", "PYTHONPATH=benchmarks", "python"] + command[1:]
    print("command:", " ".join(shlex.quote(c) for c in shown).replace(str(frontend), "$CT_FRONTEND"))
    print(f"  ($CT_FRONTEND = {frontend})")
    start = time.time()
    with tempfile.TemporaryDirectory() as cwd:  # outside the project: its pytest addopts do not apply
        subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL if not args.verbose else None)
    return command, time.time() - start


def read_records(records: Path) -> list[dict]:
    rows = []
    for path in sorted(records.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def category(row: dict) -> str:
    if row["outcome"] == "skipped":
        return "skipped (the test's own skip or xfail)"
    if RANDOM.search(row["nodeid"]) or any(t.startswith("random") or t == "categoricalDistribution" for t in row["layers"]):
        return "out of scope: random op"
    if row["outcome"] == "passed":
        return "passed" if row["predicted"] else "out of scope: passed without asking a prediction (early return, frontend only)"
    if row["stage"] == "convert":
        return "out of scope: conversion or TensorFlow error"
    if row["stage"] == "after":
        return "out of scope: the test's own check after a passing comparison"
    return "failed (in scope)"


def cause(row: dict) -> str:
    """A failure's cause, with the numbers and names that differ case by case removed."""
    error = row.get("error", "")
    missing = re.search(r"no adapter for ([\w, ]+)\.", error)
    if missing:
        return f"{row['stage']}: no adapter for {missing.group(1)}"
    if "Not equal to tolerance" in error or "Mismatched elements" in error:
        return f"{row['stage']}: values differ beyond the test's tolerance"
    error = re.sub(r"'[^']*'|\"[^\"]*\"", "'..'", error)
    error = re.sub(r"\d+(\.\d+)?", "N", error)[:160]
    return f"{row['stage']}: {error} [{row.get('where', '')}]"


def emitted_by_backend() -> list[str]:
    """NN layer types the NN backend's op mapping can write: the fields its builder calls set."""
    from coremltools.proto import NeuralNetwork_pb2

    root = frontend_dir().parent.parent.parent
    builder = (root / "models" / "neural_network" / "builder.py").read_text()
    mapping = (root / "converters" / "mil" / "backend" / "nn" / "op_mapping.py").read_text()
    fields = {f.name for f in NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"].fields}
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"\n    def (\w+)\((.*?)(?=\n    def |\Z)", builder, re.S)}
    types = set()
    for call in set(re.findall(r"builder\.(add_\w+)", mapping)):
        types |= set(re.findall(r"spec_layer\.(\w+)", bodies.get(call, ""))) & fields
    return sorted(types)


def report(rows: list[dict], every: int, seconds: float) -> dict:
    from precision_sweep.emulator.nn_layers import LAYERS

    counts = collections.Counter(category(r) for r in rows)
    in_scope = [r for r in rows if category(r) in ("passed", "failed (in scope)")]
    passed = counts["passed"]
    print(f"\ncases: {len(rows)}" + (f" (1 in {every} collected cases)" if every > 1 else "") + f", {seconds / 60:.1f} min")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {name}")
    raw = passed / len(rows) if rows else 0.0
    scoped = passed / len(in_scope) if in_scope else 0.0
    print(f"raw: {passed}/{len(rows)} = {100 * raw:.1f} % of all cases pass")
    print(f"in scope: {passed}/{len(in_scope)} = {100 * scoped:.1f} % of in-scope cases pass")

    per_type = collections.defaultdict(lambda: [0, 0])
    for r in in_scope:
        for t in r["layers"]:
            per_type[t][0] += 1
            per_type[t][1] += category(r) == "passed"
    covered = sorted(t for t, (n, ok) in per_type.items() if t in LAYERS and ok)
    clean = sorted(t for t, (n, ok) in per_type.items() if t in LAYERS and ok == n)
    print(f"\nlayer types in the in-scope specs: {len(per_type)}; covered (adapter and a passing case): "
          f"{len(covered)} = {100 * len(covered) / max(1, len(per_type)):.1f} %; every case passing: {len(clean)}")
    for t, (n, ok) in sorted(per_type.items(), key=lambda kv: (kv[1][1] / kv[1][0], kv[0])):
        mark = "" if t in LAYERS else "  (no adapter)"
        print(f"  {t:24s} {ok:4d}/{n:<4d}{mark}")
    backend = emitted_by_backend()
    with_adapter = [t for t in backend if t in LAYERS]
    print(f"\nlayer types the NN backend emits (op_mapping.py): {len(backend)}, with an adapter: {len(with_adapter)}; "
          f"without: {', '.join(t for t in backend if t not in LAYERS)}")

    groups = collections.defaultdict(list)
    for r in rows:
        if category(r) == "failed (in scope)":
            groups[cause(r)].append(r["nodeid"].split("::")[1])
    print("\nin-scope failures by cause:")
    for key, classes in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(classes):4d}  {key}\n        in {', '.join(f'{c} x{n}' for c, n in collections.Counter(classes).most_common())}")
    out_groups = collections.defaultdict(list)
    for r in rows:
        if category(r).startswith("out of scope: conversion") or category(r).startswith("out of scope: the test"):
            out_groups[cause(r)].append(r["nodeid"].split("::")[1])
    print("\nout-of-scope failures by cause (coremltools, TensorFlow or the test's own checks):")
    for key, classes in sorted(out_groups.items(), key=lambda kv: -len(kv[1]))[:25]:
        print(f"  {len(classes):4d}  {key}\n        in {', '.join(f'{c} x{n}' for c, n in collections.Counter(classes).most_common(6))}")
    return {"cases": len(rows), "passed": passed, "in_scope": len(in_scope), "raw": raw, "in_scope_fraction": scoped,
            "layer_types": len(per_type), "covered": covered, "categories": dict(counts)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=4, help="keep every k-th collected case (1: all)")
    parser.add_argument("--workers", default="2", help="pytest-xdist workers")
    parser.add_argument("-k", default=None, help="a pytest -k expression")
    parser.add_argument("--files", nargs="+", default=list(TEST_FILES), help="test files under frontend/")
    parser.add_argument("--records", type=Path, default=None, help="keep the per-case records here (re-report with --report-only)")
    parser.add_argument("--report-only", action="store_true", help="report the records in --records without running")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--verbose", action="store_true", help="show pytest's output")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        records = args.records or Path(scratch)
        records.mkdir(parents=True, exist_ok=True)
        seconds = 0.0
        if not args.report_only:
            for old in records.glob("*.jsonl"):
                old.unlink()
            _, seconds = run_tests(args, records)
        summary = report(read_records(records), args.every, seconds)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
