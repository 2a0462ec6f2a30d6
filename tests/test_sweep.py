"""The default sweep end to end: a real multirun in a subprocess, a real SQLite MLflow store.

The grid (3 precisions x 4 targets) runs once per module into its own temporary directory;
the tests then read the store back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweep_testing import mlflow_client, run_cli

METRICS = {
    "accuracy", "baseline_accuracy", "accuracy_delta", "agreement", "max_abs_diff",
    "mean_abs_diff", "model_size_bytes", "convert_seconds", "eval_seconds", "n_samples", "peak_rss_mb",
}
PARAMS = {"precision", "target", "effective_target", "model_format", "compute_units", "model", "dataset", "task", "input_type",
          "classifier"}
PROVENANCE = {"runtime", "runtime_requested", "numerics_version", "model_hash", "dataset_hash"}


@pytest.fixture(scope="module")
def default_sweep(tmp_path_factory, shared_cache):
    workdir = tmp_path_factory.mktemp("sweep")
    result = run_cli(["precision-sweep", "sweep=default", f"paths.cache={shared_cache}"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = workdir / "outputs"
    client = mlflow_client(outputs)
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return workdir, outputs, client, experiment, runs, result


def _children(runs):
    return [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]


def test_one_parent_with_twelve_children_and_nothing_in_default(default_sweep):
    _, _, client, experiment, runs, _ = default_sweep
    parents = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    children = _children(runs)
    assert len(children) == 12
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert client.search_runs(["0"]) == []  # the "Default" experiment stays empty
    assert all(r.info.status != "RUNNING" for r in runs)
    cells = {(c.data.params["precision"], c.data.params["target"]) for c in children}
    assert cells == {(p, t) for p in ("fp32", "fp16", "int8") for t in ("ios15", "ios16", "ios17", "ios18")}


def test_finished_children_have_every_metric_param_and_artifact(default_sweep):
    _, _, client, _, runs, _ = default_sweep
    evaluated = [c for c in _children(runs) if c.data.tags.get("precision_sweep.outcome") == "evaluated"]
    assert len(evaluated) == 11
    for run in evaluated:
        assert METRICS <= set(run.data.metrics), run.data.params
        assert 200 < run.data.metrics["peak_rss_mb"] < 1e5  # TensorFlow and coremltools alone take hundreds of MB
        assert PARAMS <= set(run.data.params)
        # params are what varies or is filtered by; where the run came from is in its tags
        assert set(run.data.params) <= PARAMS | {"device", "spec_version"}, set(run.data.params)
        assert PROVENANCE <= set(run.data.tags)
        assert run.data.tags["runtime"] in ("emulator", "coreml")
        assert run.data.params["effective_target"] == run.data.params["target"]
        assert run.data.metrics["accuracy_delta"] == pytest.approx(
            run.data.metrics["accuracy"] - run.data.metrics["baseline_accuracy"]
        )
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"resolved_config.yaml", "predictions.npz"} <= names
        assert any(n.endswith(".mlpackage") for n in names)
        assert run.data.metrics["model_size_bytes"] > 10_000
        # the summaries' units, for the runs table
        assert run.data.metrics["delta_pp"] == pytest.approx(100 * run.data.metrics["accuracy_delta"])
        assert run.data.metrics["ci_low_pp"] == pytest.approx(100 * run.data.metrics["accuracy_delta_ci_low"])
        assert run.data.metrics["size_kb"] == pytest.approx(run.data.metrics["model_size_bytes"] / 1024)


def test_int8_ios15_is_a_skipped_child_with_its_reason(default_sweep):
    _, _, _, _, runs, _ = default_sweep
    (run,) = [c for c in _children(runs) if (c.data.params["precision"], c.data.params["target"]) == ("int8", "ios15")]
    assert run.info.status == "FINISHED"
    assert run.data.tags["precision_sweep.outcome"] == "skipped"
    assert "iOS16" in run.data.tags["skip_reason"]
    assert "accuracy" not in run.data.metrics
    assert run.data.tags["mlflow.note.content"] == "**Skipped.** " + run.data.tags["skip_reason"]
    assert run.info.run_name.endswith("(skipped)")


def test_fp32_emulator_matches_tensorflow(default_sweep):
    _, _, _, _, runs, _ = default_sweep
    fp32 = [c for c in _children(runs) if c.data.params["precision"] == "fp32"]
    assert len(fp32) == 4
    for run in fp32:
        assert run.data.metrics["agreement"] == 1.0
        assert run.data.metrics["max_abs_diff"] <= 1e-5
        assert run.data.metrics["baseline_accuracy"] >= 0.95


def test_compression_shrinks_the_package(default_sweep):
    _, _, _, _, runs, _ = default_sweep
    size = {
        (c.data.params["precision"], c.data.params["target"]): c.data.metrics.get("model_size_bytes")
        for c in _children(runs)
    }
    assert size[("fp16", "ios16")] < 0.6 * size[("fp32", "ios16")]
    assert size[("int8", "ios16")] < 0.7 * size[("fp16", "ios16")]


def test_predictions_artifact_allows_analysis_without_reexecution(default_sweep):
    _, _, client, _, runs, _ = default_sweep
    run = next(c for c in _children(runs) if c.data.params["precision"] == "fp16")
    local = client.download_artifacts(run.info.run_id, "predictions.npz")
    with np.load(local, allow_pickle=False) as data:
        outputs, baseline, labels = data["outputs"], data["baseline"], data["labels"]
    assert outputs.shape == baseline.shape == (len(labels), 10)
    assert np.mean(outputs.argmax(1) == labels) == pytest.approx(run.data.metrics["accuracy"])


def test_terminal_summary_lists_every_job(default_sweep):
    *_, result = default_sweep
    summary = result.stdout[result.stdout.index("precision-sweep summary"):]
    assert summary.count("FINISHED") == 11 and summary.count("SKIPPED") == 1
    for column in ("precision", "target", "status", "accuracy", "delta", "agreement", "size_bytes"):
        assert column in summary


def test_pick_within_budget_prints_the_cheapest_and_exits_0(default_sweep):
    workdir, *_ = default_sweep
    result = run_cli(["precision-pick", "--max-drop", "0.5"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "pick: run" in result.stdout and "precision=int8" in result.stdout
    as_json = run_cli(["precision-pick", "--max-drop", "0.5", "--json"], cwd=workdir)
    decision = json.loads(as_json.stdout)
    sizes = [row["cost"] for row in decision["qualifying"]]
    assert decision["pick"]["cost"] == min(sizes)
    assert decision["pick"]["precision"] == "int8"


def test_the_decision_is_on_the_parent_and_the_children_and_the_links_are_printed(default_sweep):
    """The UI answers without set-up: the parent's description names the pick and links to its
    run, the parent logs headline metrics and the swept axes, evaluated children carry pick /
    on_front / within_budget, and the terminal prints the runs view and the parent's page."""
    _, outputs, client, experiment, runs, result = default_sweep
    (parent,) = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    children = _children(runs)
    evaluated = [c for c in children if c.data.tags.get("precision_sweep.outcome") == "evaluated"]
    assert parent.data.params["precision"] == "fp32,fp16,int8"
    assert parent.data.params["target"] == "ios15,ios16,ios17,ios18"
    assert parent.info.run_name.startswith("sweep digits_cnn on digits ")
    metrics = parent.data.metrics
    assert (metrics["n_evaluated"], metrics["n_skipped"], metrics["n_failed"]) == (11, 1, 0)
    best = max(100 * c.data.metrics["accuracy_delta"] for c in evaluated)
    assert metrics["best_delta_pp"] == pytest.approx(best)
    picked = [c for c in evaluated if c.data.tags.get("pick") == "true"]
    assert len(picked) == 1, "one pick under the default budget on the digits model"
    (pick,) = picked
    assert {c.data.tags["pick"] for c in evaluated} == {"true", "false"}
    assert pick.data.tags["within_budget"] == "true" and pick.data.tags["on_front"] == "true"
    assert all(c.data.tags.get("within_budget") in ("true", "false") for c in evaluated)
    assert metrics["pick_delta_pp"] == pytest.approx(100 * pick.data.metrics["accuracy_delta"])
    assert metrics["pick_size_kb"] == pytest.approx(pick.data.metrics["model_size_bytes"] / 1024)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Pick: [")
    assert f"#/experiments/{experiment.experiment_id}/runs/{pick.info.run_id}" in note
    assert "precision-sweep summary" in note
    assert experiment.tags["mlflow.note.content"].startswith("precision-sweep: one parent run per sweep")
    assert f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning" in result.stdout
    assert f"/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}" in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{outputs / 'mlflow.db'}" in result.stdout


def test_a_redirected_log_holds_no_escape_codes_and_the_end_prints_once(default_sweep):
    *_, result = default_sweep  # run with its output piped, as a scheduler or `> log` would
    output = result.stdout + result.stderr
    assert "\x1b" not in output and "\r" not in output
    assert result.stdout.count("precision-sweep summary") == 1
    assert result.stdout.count("runs view:") == 1
    final = [line for line in result.stderr.splitlines() if line.startswith("sweep: 12/12 jobs done")]
    assert len(final) == 1 and " in " in final[0], final
    progress = [line for line in result.stderr.splitlines() if line.startswith("sweep: ")]
    assert len(progress) == len(set(progress)), "a progress line repeats unchanged"


@pytest.mark.slow
def test_a_terminal_shows_one_live_line_below_the_log(tmp_path, shared_cache):
    import fcntl
    import os
    import pty
    import re
    import struct
    import subprocess
    import sys
    import termios

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECISION_SWEEP_", "MLFLOW_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "precision_sweep", "-m", "precision=fp32,fp16", "target=ios16,ios17",
         f"paths.outputs={tmp_path / 'outputs'}", f"paths.cache={shared_cache}"],
        cwd=tmp_path, stdin=terminal, stdout=terminal, stderr=terminal, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closed: the sweep ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert process.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    # What a terminal shows: each \r returns to the line start, so keep what follows the last one.
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line.rstrip("\r").rsplit("\r", 1)[-1]) for line in screen.split("\n")]
    assert any("sweep: ok" in line for line in screen.split("\n")), "no live sweep line"
    logged = [line for line in lines if "[precision_sweep.job][INFO]" in line]
    assert len(logged) >= 4, lines[-40:]
    assert not [line for line in logged if "jobs [" in line], "a log line was glued to the live line"
    assert not [line for line in lines if "batch" in line and "%|" in line], "a job's batch bar under the live line"
    assert len([line for line in lines if line.startswith("sweep: 4/4 jobs done")]) == 1
    assert sum("precision-sweep summary" in line for line in lines) == 1


def test_the_parent_logs_the_summary_as_a_table_with_the_deciding_columns_first(default_sweep):
    from pathlib import Path

    import pandas as pd

    _, outputs, client, experiment, runs, _ = default_sweep
    (parent,) = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    local = client.download_artifacts(parent.info.run_id, "summary.csv", str(outputs.parent / "download"))
    csv = pd.read_csv(local)
    assert list(csv.columns[:8]) == ["precision", "target", "compute_units", "device", "status", "delta_pp", "ci_low_pp", "size_kb"]
    assert csv.columns[-1] == "run_id" and len(csv) == 12
    # a logged table (MLflow's artifact view renders it): {"columns": [...], "data": [[...], ...]}
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "summary_table.json",
                                                       str(outputs.parent / "download"))).read_text())
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert "mlflow.loggedArtifacts" in client.get_run(parent.info.run_id).data.tags  # what mlflow.load_table finds
    assert sorted(zip(table["precision"], table["target"])) == sorted(zip(csv["precision"], csv["target"]))
    evaluated = table[table["status"] == "FINISHED"]
    sizes = {(c.data.params["precision"], c.data.params["target"]): c.data.metrics["size_kb"]
             for c in _children(runs) if "size_kb" in c.data.metrics}
    for row in evaluated.itertuples():
        assert row.size_kb == pytest.approx(sizes[(row.precision, row.target)], abs=1e-3)
