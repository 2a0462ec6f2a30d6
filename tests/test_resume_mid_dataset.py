"""A job stopped mid-dataset resumes there (runtime/batches.py): real jobs on the digits model,
the emulator, a real MLflow store; the stop is a Ctrl-C raised from the runtime's predict after
a fixed number of batches, so where it lands does not depend on the machine's speed."""

from __future__ import annotations

import numpy as np
import pytest

from precision_sweep import runtime as runtime_module
from sweep_testing import compose, mlflow_client

BATCH = 64  # 450 test samples: 8 batches
STOP_AT = 3  # batches finished before the stop
SELECT_RUNTIME = runtime_module.select_runtime


def _counting(monkeypatch, calls: list, stop_after: int | None = None):
    """Every runtime a job builds counts its predict calls; with ``stop_after``, the call after
    that many raises KeyboardInterrupt (what Ctrl-C raises)."""
    def counted(*args, **kwargs):
        built = SELECT_RUNTIME(*args, **kwargs)
        predict = built.predict

        def predict_counted(feeds):
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append(len(next(iter(feeds.values()))))
            return predict(feeds)

        built.predict = predict_counted
        return built

    monkeypatch.setattr(runtime_module, "select_runtime", counted)


def _job(outputs, cache, *extra, precision: str = "fp16"):
    return compose([f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false", "diagnosis=off",
                    f"precision={precision}", f"runtime.batch_size={BATCH}", *extra])


def _saved(cache) -> set:
    return set((cache / "evaluations").glob("*/batch-*.npz"))


def _runs(outputs):
    client = mlflow_client(outputs)
    return client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])


def test_a_job_stopped_mid_dataset_resumes_with_the_missing_batches_only(tmp_path, shared_cache, monkeypatch):
    from precision_sweep.job import run_job

    whole = tmp_path / "whole"
    whole.mkdir()
    calls: list = []
    _counting(monkeypatch, calls)
    run_job(_job(whole, shared_cache))
    assert len(calls) == 8  # the uninterrupted job: every batch
    [reference] = _runs(whole)

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    before = _saved(shared_cache)  # other tests' jobs share the cache
    calls.clear()
    _counting(monkeypatch, calls, stop_after=STOP_AT)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(stopped, shared_cache))
    [killed] = _runs(stopped)
    assert killed.info.status == "KILLED"
    saved = sorted(_saved(shared_cache) - before)
    assert [p.name for p in saved] == [f"batch-{start:09d}.npz" for start in (0, 64, 128)]

    calls.clear()
    _counting(monkeypatch, calls)
    run_job(_job(stopped, shared_cache, "resume=true"))
    assert calls == [64, 64, 64, 64, 2]  # batches 4 to 8 only (the last has 450 - 7 x 64 samples)
    resumed = next(r for r in _runs(stopped) if r.info.run_id != killed.info.run_id)
    assert resumed.info.status == "FINISHED"
    for name in ("accuracy", "accuracy_delta", "accuracy_delta_ci_low", "accuracy_delta_ci_high", "agreement",
                 "max_abs_diff", "mean_abs_diff"):
        assert resumed.data.metrics[name] == reference.data.metrics[name], name
    # the predictions recorded, the saved batches are removed
    assert not saved[0].parent.exists()
    outputs = [np.load(next(d.rglob("predictions.npz")), allow_pickle=False)["outputs"] for d in (whole, stopped)]
    assert np.array_equal(outputs[0].view(np.uint32), outputs[1].view(np.uint32))


def test_without_resume_a_stopped_jobs_batches_are_evaluated_again(tmp_path, shared_cache, monkeypatch):
    """resume=false is a fresh run: the saved batches of a stopped one are not trusted."""
    from precision_sweep.job import run_job

    calls: list = []
    _counting(monkeypatch, calls, stop_after=STOP_AT)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(tmp_path, shared_cache, precision="fp32"))
    calls.clear()
    _counting(monkeypatch, calls)
    run_job(_job(tmp_path, shared_cache, precision="fp32"))
    assert len(calls) == 8
