"""A repair and a diagnosis re-convert nothing the job already cached.

A real ``precision=fp16_auto`` job (repair rounds on a model whose fp16 activations overflow)
and then ``precision-diagnose`` of that run, each in its own process, as a user runs them.
The converter logs one line per conversion it actually performs; across both processes every
(model, target, precision) is converted once, and the diagnosis converts nothing.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from models import digits_data, overflow_model
from sweep_testing import mlflow_client, run_cli

CONVERSION = re.compile(r"(frontend|base): converting (\S+) for (\S+) (?:at (\S+)|\((\S+) I/O\))")


def _conversions(text: str) -> list[tuple[str, ...]]:
    return [tuple(part for part in match.groups() if part) for match in CONVERSION.finditer(text)]


@pytest.mark.slow
def test_fp16_auto_job_then_diagnosis_convert_each_program_once(tmp_path):
    model_path = tmp_path / "overflow_cnn.keras"
    overflow_model(digits_data()).keras_model.save(model_path)
    outputs = tmp_path / "outputs"

    job = run_cli(
        ["precision-sweep", "precision=fp16_auto", "target=ios16", "model=keras", f"model.path={model_path}",
         f"paths.outputs={outputs}", "diagnosis=off"],
        cwd=tmp_path,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    run = mlflow_client(outputs).search_runs(["1"], "params.precision = 'fp16_auto'")[0]
    assert run.info.status == "FINISHED" and run.data.metrics["repair_kept_ops"] >= 1  # rounds happened

    diagnosis = run_cli(["precision-diagnose", run.info.run_id, "--tracking-uri", f"sqlite:///{outputs / 'mlflow.db'}"], cwd=tmp_path)
    assert diagnosis.returncode == 0, diagnosis.stdout[-3000:] + diagnosis.stderr[-3000:]

    in_job = _conversions(job.stdout + job.stderr)
    in_diagnosis = _conversions(diagnosis.stdout + diagnosis.stderr)
    counts = Counter(in_job + in_diagnosis)
    assert counts and max(counts.values()) == 1, counts
    assert in_diagnosis == []  # the FP32 twin and the frontend program come from the job's caches
    # what the job had to build: both frontends (fp16 and fp32 I/O), the fp16 program, the FP32
    # twin (reference of the repair and the device report) and one mixed program per round
    name = run.data.params["model"]
    assert {("frontend", name, "iOS16", "float16"), ("frontend", name, "iOS16", "float32"),
            ("base", name, "iOS16", "float16"), ("base", name, "iOS16", "float32")} <= set(counts)
    mixed = [key for key in counts if key[0] == "base" and key[3] not in ("float16", "float32")]
    assert len(mixed) >= 1
    assert "hot" in diagnosis.stdout  # the report names the overflowing layer
    # the diagnosis's own messages reach stderr, so a conversion there would have been counted
    assert f"[precision_sweep.diagnose.run] diagnosing run {run.info.run_id}" in diagnosis.stderr
