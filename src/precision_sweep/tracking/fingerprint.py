"""A job's fingerprint: what makes two jobs the same measurement.

The hash of the resolved job config (without where things are written or how they are shown),
the model and dataset content hashes, and the versions of the tools that produce the numbers.
Two runs with one fingerprint measured the same thing, so a resumed sweep may reuse one.
"""

from __future__ import annotations

from importlib import metadata

from omegaconf import DictConfig, OmegaConf

from precision_sweep.hashing import hash_config

# Config keys that do not change what a job measures.
IGNORED_KEYS = ("paths", "tracking", "resume", "limits", "hydra", "diagnosis", "pick")
IGNORED_RUNTIME_KEYS = ("progress", "batch_size", "shards")
TOOLS = ("precision-sweep", "coremltools", "tensorflow-cpu", "tensorflow", "keras", "numpy")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def job_fingerprint(cfg: DictConfig, model_hash: str, dataset_hash: str) -> str:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in IGNORED_KEYS:
        resolved.pop(key, None)
    for key in IGNORED_RUNTIME_KEYS:
        resolved.get("runtime", {}).pop(key, None)
    return hash_config(
        {"config": resolved, "model": model_hash, "dataset": dataset_hash, "versions": tool_versions()}
    )
