"""The sweeper's config, registered as ``hydra/sweeper=precision_sweep``: the fields of Hydra's
``BasicSweeperConf`` (``params``, ``max_batch_size``), so grids written for the basic sweeper
(``sweeps/``) work unchanged."""

# No "from __future__ import annotations": Hydra executes plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

SWEEPER_NAME = "precision_sweep"


@dataclass
class CoveringSweeperConf:
    _target_: str = "hydra_plugins.precision_sweep_sweeper.sweeper.CoveringSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name=SWEEPER_NAME,
    node=CoveringSweeperConf,
    provider="precision_sweep_sweeper",
)
