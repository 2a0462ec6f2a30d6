"""Deployment targets: coremltools targets, their spec versions, and reading them back."""

from __future__ import annotations

# Core ML specification version of each OS release (coremltools.target values).
SPEC_VERSIONS = {
    "iOS15": 6, "macOS12": 6,
    "iOS16": 7, "macOS13": 7,
    "iOS17": 8, "macOS14": 8,
    "iOS18": 9, "macOS15": 9,
}


def coremltools_target(name: str):
    import coremltools as ct

    return getattr(ct.target, name)


def spec_version(coremltools_target_name: str) -> int:
    return SPEC_VERSIONS[coremltools_target_name]


def effective_target_name(spec_version_value: int, requested: str) -> str:
    """Target name for a saved model's spec version, on the requested target's platform.

    ``effective_target_name(7, "iOS15") == "iOS16"``: the model needs iOS16 although iOS15
    was asked for.
    """
    platform = "macOS" if requested.startswith("macOS") else "iOS"
    for name, version in SPEC_VERSIONS.items():
        if version == spec_version_value and name.startswith(platform):
            return name
    return f"spec{spec_version_value}"
