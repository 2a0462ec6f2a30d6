"""Config schema of the ``tracking`` group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class TrackingConfig:
    name: str = MISSING
    # Tracking URI; a sqlite:/// or file path is made absolute once, in the launching process.
    uri: str = MISSING
    experiment: str = "precision-sweep"
    # Where artifacts of a newly created experiment go (absolute path or URI).
    artifact_location: Optional[str] = "${paths.outputs}/mlartifacts"
