"""Hydra search-path plugin: makes the project's ``conf/`` visible to every Hydra app run.

This is what lets a grid in ``sweeps/`` be a whole primary config that extends
``conf/config.yaml`` (``precision-sweep -cd sweeps -cn default``).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class PrecisionSweepSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from precision_sweep.paths import config_dir

        search_path.append(provider="precision-sweep", path=f"file://{config_dir()}")
