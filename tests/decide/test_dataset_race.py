"""Parallel jobs (joblib, Ray, SLURM) log the same test set as their runs' dataset input at the
same moment. MLflow looks the dataset up, then inserts it: the job that loses that race got a
UNIQUE-constraint error and failed (seen in CI on the Ray grid). Here six processes, released
together by a barrier, each log one new dataset into their own run of one real store; every run
must end with the dataset as its input. With the race handled this holds however the processes
are scheduled."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

WORKERS, ROUNDS = 6, 3


def _log_together(uri: str, experiment_id: str, run_ids: list[str], barrier, index: int, failures) -> None:
    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking.job_run import JobRun

    client = MlflowClient(uri)
    x, y = np.zeros((6, 3), np.float32), np.arange(6)
    for round_index, run_id in enumerate(run_ids):
        run = JobRun.__new__(JobRun)  # the job's run, attached to a run the parent created
        run.client, run.run_id, run._dataset = client, run_id, None
        barrier.wait()
        try:
            run.log_dataset("digits", f"digest-{round_index}", x, y)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            failures.append(f"worker {index} round {round_index}: {type(exc).__name__}: {str(exc)[:300]}")


@pytest.mark.slow
def test_jobs_logging_one_new_dataset_at_once_all_get_it(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("race")
    runs = [[client.create_run(experiment_id).info.run_id for _ in range(ROUNDS)] for _ in range(WORKERS)]

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier, failures = manager.Barrier(WORKERS), manager.list()
        workers = [context.Process(target=_log_together, args=(uri, experiment_id, runs[i], barrier, i, failures))
                   for i in range(WORKERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=600)
        assert [w.exitcode for w in workers] == [0] * WORKERS
        assert list(failures) == []
    for worker_runs in runs:
        for round_index, run_id in enumerate(worker_runs):
            (logged,) = client.get_run(run_id).inputs.dataset_inputs
            assert (logged.dataset.name, logged.dataset.digest) == ("digits", f"digest-{round_index}")
    datasets = {(d.dataset.name, d.dataset.digest) for r in runs for i in r for d in client.get_run(i).inputs.dataset_inputs}
    assert len(datasets) == ROUNDS  # one dataset row per digest, shared by the runs
