"""The in-job drift diagnosis of a recurrent model (issue 15): a real fp16 sweep of a legacy
Keras 2 GRU (``model=tf_keras``, a MIL ``while_loop``) diagnosed on every run logs a
``drift.csv`` whose rows reach inside the loop, one per op and iteration, mapped to the layer."""

from __future__ import annotations

import pandas as pd
import pytest
from byo_helpers import random_samples, tf_keras_gru, write_npz
from sweep_testing import mlflow_client, run_cli

STEPS = 5


@pytest.mark.slow
def test_drift_csv_of_a_gru_sweep_ranks_the_ops_of_every_loop_iteration(tmp_path):
    pytest.importorskip("tf_keras")
    tf_keras_gru(steps=STEPS, features=3, classes=4).save(tmp_path / "gru.h5")
    x, y = random_samples(20, (STEPS, 3), 4)
    data = write_npz(tmp_path / "seqs.npz", x, y)
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp16", "target=ios16", "runtime=emulator", "runtime.progress=false",
         "model=tf_keras", f"model.path={tmp_path / 'gru.h5'}", "dataset=npz", f"dataset.path={data}",
         "dataset.test_size=1.0", "diagnosis.below_agreement=2"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    (job,) = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("precision_sweep.role") == "job"]
    assert job.info.status == "FINISHED"
    assert "drift_error" not in job.data.tags, job.data.tags["drift_error"]
    table = pd.read_csv(client.download_artifacts(job.info.run_id, "drift.csv"), keep_default_na=False,
                        dtype={"iteration": str})
    in_loop = table[table["iteration"] != ""]
    cell = in_loop[in_loop["op_type"].isin(["matmul", "sigmoid", "tanh"])]
    assert not cell.empty
    assert (cell.groupby("key")["iteration"].nunique() == STEPS).all()
    assert set(cell["layer"]) == {"gru"}
    assert (cell["gain"] > 0).any()
