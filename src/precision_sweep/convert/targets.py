"""Deployment targets: coremltools targets, their spec versions, their model format, and reading
the version back (from a saved model's bytes, without importing coremltools).

Targets before iOS15/macOS12 (spec 4 and 5) hold **neuralnetwork** models (a ``.mlmodel``
file); from iOS15/macOS12 (spec 6) on we convert to ML Programs (an ``.mlpackage``), as
``ct.convert`` does by default for those targets.
"""

from __future__ import annotations

import json
from pathlib import Path

# Core ML specification version of each OS release (coremltools.target values; coremltools'
# _SPECIFICATION_VERSION_IOS_13 = 4, _IOS_14 = 5, ...).
SPEC_VERSIONS = {
    "iOS13": 4, "macOS10_15": 4,
    "iOS14": 5, "macOS11": 5,
    "iOS15": 6, "macOS12": 6,
    "iOS16": 7, "macOS13": 7,
    "iOS17": 8, "macOS14": 8,
    "iOS18": 9, "macOS15": 9,
}


def coremltools_target(name: str):
    import coremltools as ct

    return getattr(ct.target, name)


# The first spec version whose targets we convert to ML Programs (iOS15/macOS12).
MLPROGRAM_FROM_SPEC = 6
NEURALNETWORK = "neuralnetwork"
MLPROGRAM = "mlprogram"


def spec_version(coremltools_target_name: str) -> int:
    return SPEC_VERSIONS[coremltools_target_name]


def model_format(coremltools_target_name: str) -> str:
    """``"neuralnetwork"`` (iOS13/14, macOS10_15/11) or ``"mlprogram"`` (iOS15/macOS12 on): the
    ``convert_to`` of ``ct.convert`` for a target."""
    return MLPROGRAM if spec_version(coremltools_target_name) >= MLPROGRAM_FROM_SPEC else NEURALNETWORK


def model_suffix(coremltools_target_name: str) -> str:
    """The saved model's suffix at a target: ``.mlmodel`` (a file) or ``.mlpackage`` (a folder)."""
    return ".mlpackage" if model_format(coremltools_target_name) == MLPROGRAM else ".mlmodel"


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


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """(value, next offset) of the protobuf varint at ``data[at:]``."""
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _spec_version_field(data: bytes) -> int | None:
    """``specificationVersion`` (field 1, a varint) of a serialized ``CoreML.Specification.Model``,
    or None when ``data`` ends before it. Serializers write it first; other top-level fields
    before it are skipped."""
    at = 0
    while at < len(data):
        try:
            tag, at = _varint(data, at)
            field_number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                value, at = _varint(data, at)
                if field_number == 1:
                    return value
                continue
            if wire_type == 2:
                length, at = _varint(data, at)
                at += length
            elif wire_type == 1:
                at += 8
            elif wire_type == 5:
                at += 4
            else:
                raise ValueError(f"unexpected protobuf wire type {wire_type}")
        except ValueError:
            return None
    return None if at > len(data) else 0  # proto3: an absent field is 0


def model_spec_file(package: Path) -> Path:
    """The ``model.mlmodel`` of an ``.mlpackage`` (its root model in ``Manifest.json``), or the
    path itself when it is a ``.mlmodel`` file."""
    package = Path(package)
    if package.is_file():
        return package
    manifest = json.loads((package / "Manifest.json").read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    return package / "Data" / entry["path"]


def package_spec_version(package: Path) -> int:
    """The Core ML specification version of a saved model, read from its bytes.

    Equal to ``coremltools.utils.load_spec(package).specificationVersion`` without importing
    coremltools (and TensorFlow with it): the version is the first field of the ``Model``
    protobuf, a varint at the start of the file.
    """
    path = model_spec_file(package)
    with open(path, "rb") as handle:
        head = handle.read(64)
        version = _spec_version_field(head)
        if version is None or version == 0 and len(head) == 64:  # not in the first bytes: read all
            version = _spec_version_field(head + handle.read())
    if version is None:
        raise ValueError(f"{path} is not a Core ML model specification (cannot read its version)")
    return version
