"""The package as users install it: a wheel, installed into a fresh virtual environment without
the source tree, runs a ready grid from an empty folder (slow: it installs the dependencies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sweep_testing import REPO

pytestmark = pytest.mark.slow

# Runs in the installed environment: every run of the store as one JSON line (./outputs by default).
READ_THE_STORE = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="sqlite:///" + sys.argv[1])
experiment = client.get_experiment_by_name("precision-sweep")
runs = client.search_runs([experiment.experiment_id])
print(json.dumps([{"id": r.info.run_id, "parent": r.data.tags.get("mlflow.parentRunId"),
                   "precision": r.data.params.get("precision"), "status": r.info.status} for r in runs]))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=900)
    (path,) = out.glob("precision_sweep-*.whl")
    return path


def test_the_wheel_ships_the_configs_and_only_its_own_two_plugins(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "precision_sweep/conf/config.yaml" in names
    assert {"precision_sweep/conf/sweep/default.yaml", "precision_sweep/conf/device/m1.yaml",
            "precision_sweep/conf/hydra/launcher/parallel.yaml"} <= set(names)
    # Hydra instantiates launchers and sweepers only from the hydra_plugins namespace: the Ray
    # launcher (hydra/launcher=precision_sweep_ray) and the sweeper (hydra/sweeper=precision_sweep)
    # are the plugins shipped (no search-path plugin), and the namespace stays shared with other
    # plugins (no hydra_plugins/__init__.py).
    assert {n.split("/")[1] for n in names if n.startswith("hydra_plugins/")} == {
        "precision_sweep_ray_launcher", "precision_sweep_sweeper"}
    assert "hydra_plugins/__init__.py" not in names


def test_a_wheel_install_runs_a_ready_grid_from_an_empty_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    pip = env_dir / "bin" / "pip"
    install = subprocess.run([str(pip), "install", "-q", str(wheel)], capture_output=True, text=True, timeout=2400)
    assert install.returncode == 0, install.stderr[-3000:]
    empty = tmp_path / "somewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW", "PRECISION_SWEEP"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{env_dir / 'bin'}:{env['PATH']}")
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import precision_sweep, sys; print(precision_sweep.__file__)"],
                           cwd=empty, capture_output=True, text=True, env=env, timeout=600)
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout  # the installed copy, not the clone
    run = subprocess.run([str(env_dir / "bin" / "precision-sweep"), "sweep=quick", "runtime.progress=false", "progress=false"],
                         cwd=empty, capture_output=True, text=True, env=env, timeout=2400)
    assert run.returncode == 0, run.stderr[-3000:]
    # The store is read by the installed environment's own MLflow: the wheel's venv resolves the
    # newest MLflow 3 release, which may be newer than this one, and an older MLflow refuses a
    # store whose schema migrations it does not know (mlflow 3.17 against 3.18's store).
    read_back = subprocess.run([str(env_dir / "bin" / "python"), "-c", READ_THE_STORE, str(empty / "outputs" / "mlflow.db")],
                               cwd=empty, capture_output=True, text=True, env=env, timeout=600)
    assert read_back.returncode == 0, read_back.stderr[-3000:]
    runs = json.loads(read_back.stdout.strip().splitlines()[-1])
    parents = [r for r in runs if r["parent"] is None]
    assert len(parents) == 1
    children = [r for r in runs if r["parent"] == parents[0]["id"]]
    assert sorted(c["precision"] for c in children) == ["fp16", "fp32", "int8"]
    assert all(c["status"] == "FINISHED" for c in children)
