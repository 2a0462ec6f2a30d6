"""Preflight of ``hydra/launcher=ray_local``: the Ray cluster the sweep joins answers, and Ray is
installed, checked in the launching process before any run exists.

The address is ``hydra.launcher.ray.init.address`` (``RAY_ADDRESS`` wins, as in ``ray.init``):
``null``/``local`` starts a local Ray (nothing to reach); ``host:port`` is a cluster's GCS and
``ray://host:port`` a Ray Client server, both probed with one short TCP connect; ``auto`` needs a
cluster started on this machine with ``ray start``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from urllib.parse import urlsplit

from omegaconf import DictConfig

from precision_sweep.errors import UserInputError

CONNECT_TIMEOUT_S = 3.0
START_HINT = (
    "Start the cluster first (on its head node: ray start --head --port=<port>), fix "
    "hydra.launcher.ray.init.address (host:port of the head's GCS, or ray://host:10001 for Ray "
    "Client), or set hydra.launcher.ray.init.address=null to start a local Ray for this sweep."
)


def check(launcher: DictConfig) -> None:
    """Raise :class:`UserInputError` when the configured Ray cluster cannot be reached or Ray is
    not installed (the address first: it is wrong whether or not Ray is installed)."""
    address = configured_address(launcher)
    if address == "auto":
        _require_ray()
        address = _running_local_cluster()
    if address is not None:
        host, port = split_address(address)
        _probe(host, port, address)
    _require_ray()


def configured_address(launcher: DictConfig) -> str | None:
    """The address ``ray.init`` will use: ``RAY_ADDRESS``, else the config's; None for a local Ray."""
    init = (launcher.get("ray") or {}).get("init") or {}
    address = os.environ.get("RAY_ADDRESS") or init.get("address")
    if address is None or str(address).strip() in ("", "local"):
        return None
    return str(address).strip()


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` -> (host, port)."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise UserInputError(
            f"The Ray address {address!r} (hydra.launcher.ray.init.address or RAY_ADDRESS) is not "
            "host:port, ray://host:port, auto or null. " + START_HINT
        )
    return parts.hostname, port


def _probe(host: str, port: int, address: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise UserInputError(
        f"No Ray cluster answers at {address} (hydra.launcher.ray.init.address or RAY_ADDRESS): "
        f"connecting to {host}:{port} failed ({reason}), so no job was started. " + START_HINT
    )


def _running_local_cluster() -> str | None:
    """The address of the cluster ``ray start`` left on this machine, found as ``ray.init('auto')``
    finds it (Ray's own lookup; None, so not probed, if a Ray release no longer has it)."""
    from ray._private import services

    lookup = getattr(services, "canonicalize_bootstrap_address_or_die", None)
    if lookup is None:
        return None
    try:
        return lookup("auto")
    except ConnectionError as exc:
        raise UserInputError(
            "hydra.launcher.ray.init.address=auto needs a Ray cluster started on this machine, and "
            f"none is running ({exc}). " + START_HINT
        ) from exc


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise UserInputError(
            "hydra/launcher=ray_local needs Ray, which is not installed in this environment. "
            "Install it with: pip install -e '.[ray]' (or pip install 'ray>=2.40')."
        )
