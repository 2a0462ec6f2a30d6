"""A sweep's jobs in one process read an npz dataset once (data/loading.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from byo_helpers import image_cnn, random_samples, write_npz
from sweep_testing import compose, mlflow_client, run_cli


def _cfg(path, *overrides):
    return compose(["dataset=npz", f"dataset.path={path}", "dataset.test_size=0.5", *overrides]).dataset


def test_the_same_file_and_settings_give_the_kept_arrays_read_only_and_their_hash(tmp_path):
    from precision_sweep.data import load_dataset

    path = write_npz(tmp_path / "d.npz", *random_samples(40, (4,), 2))
    first, second = load_dataset(_cfg(path)), load_dataset(_cfg(path))
    assert first is not second and first.x_test is second.x_test and first.y_test is second.y_test
    assert second._hashed is first._hashed and second.content_hash == first.content_hash
    assert not second.x_test.flags.writeable and not second.x_calib.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        second.x_test[0, 0] = 1.0
    second.feed, second.run_params["seen"] = "a job's own", True  # a job's attributes stay its own
    third = load_dataset(_cfg(path))
    assert third.feed is None and "seen" not in third.run_params

    other = load_dataset(_cfg(path, "dataset.seed=1"))  # another setting: loaded anew
    assert other.x_test is not first.x_test and other.content_hash != first.content_hash


def test_a_rewritten_file_is_read_again(tmp_path):
    from precision_sweep.data import load_dataset

    path = write_npz(tmp_path / "d.npz", *random_samples(40, (4,), 2))
    before = load_dataset(_cfg(path))
    x, y = random_samples(40, (4,), 2, seed=1)
    write_npz(path, x, y)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock's same second
    after = load_dataset(_cfg(path))
    assert after.x_test is not before.x_test and after.content_hash != before.content_hash
    assert np.isin(after.x_test[:, 0], x[:, 0]).all()


def test_a_sweep_over_an_npz_file_runs_every_job_on_the_kept_arrays(tmp_path):
    model = image_cnn()
    model.save(tmp_path / "cnn.keras")
    x, y = random_samples(48, (12, 12, 3), 3)
    write_npz(tmp_path / "data.npz", x, y)
    result = run_cli(["precision-sweep", "-m", "model=keras", f"model.path={tmp_path / 'cnn.keras'}", "dataset=npz",
                      f"dataset.path={tmp_path / 'data.npz'}", "dataset.test_size=0.5", "precision=fp32,fp16,int8",
                      "compute_units=cpu_only,all", "runtime.progress=false", "diagnosis=off"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    jobs = [r for r in client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
            if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(jobs) == 6 and {r.info.status for r in jobs} == {"FINISHED"}
    assert len({r.data.tags["dataset_hash"] for r in jobs}) == 1
    fp32 = [r for r in jobs if r.data.params["precision"] == "fp32" and r.data.params["compute_units"] == "cpu_only"]
    assert fp32[0].data.metrics["agreement"] == 1.0
