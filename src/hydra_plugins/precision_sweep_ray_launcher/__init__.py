"""A Hydra launcher that runs each job of a multirun as a Ray task (``hydra/launcher=ray_local``).

Ray is the engine (scheduling, workers, a local or remote cluster); this package is only the
Hydra adapter, in the shape of Hydra's joblib launcher: :mod:`.config` registers the launcher's
config, :mod:`.ray_launcher` is the :class:`~hydra.plugins.launcher.Launcher` Hydra
instantiates, and :mod:`._core` submits the jobs and runs each one in a worker. Nothing here
imports Ray at module level: Hydra imports every plugin module on start-up, with or without Ray.
"""

__version__ = "0.1.0"
