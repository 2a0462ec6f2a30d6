"""Where the project's Hydra config directory is (``conf/`` at the repository top level)."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` directory: ``$PRECISION_SWEEP_CONF`` if set, else the repository's."""
    override = os.environ.get("PRECISION_SWEEP_CONF")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2] / "conf"

