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
    module = {"precision-sweep": "precision_sweep", "precision-pick": "precision_sweep.cli.pick", "precision-diagnose": "precision_sweep.cli.diagnose"}[args[0]]
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
