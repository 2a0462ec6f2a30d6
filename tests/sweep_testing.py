"""Test helpers shared by every test folder: real CLI runs, real Hydra compositions, MLflow.

Imported as ``from sweep_testing import ...`` (``tests/`` is on pytest's ``pythonpath``); a
uniquely named module, because ``conftest`` is a different module in each test folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SWEEPS = REPO / "sweeps"


def run_cli(args: list[str], cwd: Path, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a console command of this package (``precision-sweep``/``precision-pick``) for real."""
    module = {"precision-sweep": "precision_sweep", "precision-pick": "precision_sweep.cli.pick", "precision-diagnose": "precision_sweep.cli.diagnose", "precision-sensitivity": "precision_sweep.cli.sensitivity"}[args[0]]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    for key in ("PRECISION_SWEEP_TRACKING_URI", "PRECISION_SWEEP_EXPERIMENT_ID", "PRECISION_SWEEP_PARENT_RUN_ID", "MLFLOW_TRACKING_URI"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", module, *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def failed_job_errors(outputs: Path) -> str:
    """The ``error.txt`` of every failed job under ``outputs`` (its artifact store), for the
    message of a test that expected the sweep to succeed."""
    texts = [f"--- {path.relative_to(outputs)}\n{path.read_text()[-3000:]}" for path in sorted(Path(outputs).rglob("error.txt"))]
    return "\n".join(texts) or "(no error.txt under the outputs)"


def compose(overrides: list[str] | None = None, config_name: str = "config", return_hydra_config: bool = False):
    """Compose the real primary config with ``overrides``, found as the app finds it: through
    the ``precision_sweep.conf`` package."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import precision_sweep.config  # noqa: F401  (schemas)

    with initialize_config_module(config_module="precision_sweep.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


def mlflow_client(outputs: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")


def builtin_model_file(cache: Path, *overrides: str) -> Path:
    """Where a job caches the builtin model that ``overrides`` select under ``cache``: the key of
    ``precision_sweep.data.models.builtin.load_builtin`` (builder, epochs, seed, the train split,
    the TensorFlow and Keras versions)."""
    from precision_sweep.data import load_dataset
    from precision_sweep.data.versions import library_version
    from precision_sweep.hashing import hash_arrays, hash_config

    cfg = compose(list(overrides))
    dataset = load_dataset(cfg.dataset, cache_dir=cache)
    key = hash_config(
        {
            "model": {k: cfg.model[k] for k in ("builder", "epochs", "seed")},
            "train": hash_arrays([dataset.x_train, dataset.y_train]),
            "versions": [library_version("tensorflow"), library_version("keras")],
        }
    )
    return Path(cache) / "models" / f"{cfg.model.builder}-{key}.keras"


class WithheldModel:
    """A builtin model the test withholds from the jobs, deterministically.

    The test takes the lock a job takes to train a builtin model at first use (the cache's
    ``<model>.lock``, as another worker training it would). Every job of that model then waits
    inside its model loading: its run is RUNNING with its params logged (``precision``, ...),
    inside the block where SIGTERM closes it KILLED, and it has no ``model_hash`` yet. It stays
    there, on any machine, until :meth:`release`. :meth:`check_used` asserts, once a job has
    trained the model, that the lock held was that model's (the key did not drift)."""

    def __init__(self, cache: Path, *overrides: str):
        from filelock import FileLock

        self.path = builtin_model_file(cache, *overrides)
        assert not self.path.exists(), f"{self.path} is already trained: withhold a model no test has used"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path.with_suffix(".lock")), thread_local=False)
        self._lock.acquire(timeout=0)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def check_used(self) -> None:
        assert self.path.exists(), f"no job trained {self.path}: the lock held was not the one the jobs waited for"

    def __enter__(self) -> "WithheldModel":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
