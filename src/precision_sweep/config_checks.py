"""What a config is checked for before any work starts: the valid range of every numeric value
and the folders a sweep writes to.

Each stage schema declares a field's range beside the field (:func:`ranged`), so the range
is documented where the value is; :func:`check_ranges` walks a composed config, reads each
node's schema back from OmegaConf and reports every value outside its range in one
paragraph. :func:`check_folder` refuses an output, cache or store folder that cannot be
created or written. Both raise :class:`~precision_sweep.errors.UserInputError`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from precision_sweep.errors import UserInputError

RANGE = "precision_sweep.range"


@dataclass(frozen=True)
class Range:
    """A number between ``low`` and ``high`` (either may be open or absent), optionally whole."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    # What null means when the field may be null (None: null is not allowed).
    null: str | None = None
    # How to fix a bad value, when the range alone does not say it (e.g. the unit).
    hint: str = ""

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.whole and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def phrase(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        low, high = _number(self.low), _number(self.high)
        if self.low == 0 and self.low_open and self.high is None:
            return f"a positive {kind.removeprefix('a ')}"
        if self.high is None:
            return f"{kind} of at least {low}" if not self.low_open else f"{kind} above {low}"
        if self.low is None:
            return f"{kind} of at most {high}" if not self.high_open else f"{kind} below {high}"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class OneOf:
    """One of a few allowed numbers (e.g. the bit widths coremltools palettizes to)."""

    values: tuple
    hint: str = ""
    null: str | None = None

    def holds(self, value: Any) -> bool:
        return not isinstance(value, bool) and value in self.values

    def phrase(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


def ranged(default: Any, rule: Range | OneOf) -> Any:
    """A schema field with ``default`` whose values must satisfy ``rule``."""
    return dataclasses.field(default=default, metadata={RANGE: rule})


def _message(key: str, value: Any, rule: Range | OneOf) -> str:
    text = f"{key}={value} is not {rule.phrase()}."
    if rule.hint:
        text += f" {rule.hint}"
    else:
        text += f" Set {key} to {rule.phrase()}."
    if rule.null:
        text += f" {key}=null {rule.null}."
    return text


def range_errors(node: Any, prefix: str = "") -> list[str]:
    """Every value of ``node`` (a typed config node) outside its declared range, as messages."""
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    errors: list[str] = []
    for spec in dataclasses.fields(schema):
        if isinstance(node, DictConfig) and (spec.name not in node or OmegaConf.is_missing(node, spec.name)):
            continue
        value = node[spec.name] if isinstance(node, DictConfig) else getattr(node, spec.name)
        key = f"{prefix}{spec.name}"
        rule = spec.metadata.get(RANGE)
        if value is None:
            if rule is not None and rule.null is None:
                errors.append(_message(key, "null", rule))
            continue
        if rule is not None:
            items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
            if not all(rule.holds(item) for item in items):
                errors.append(_message(key, value, rule))
        elif isinstance(value, DictConfig) or dataclasses.is_dataclass(value):
            errors.extend(range_errors(value, f"{key}."))
    return errors


def check_ranges(cfg: Any) -> None:
    """Raise one user error naming every value of ``cfg`` outside its declared range."""
    errors = range_errors(cfg)
    if errors:
        raise UserInputError(" ".join(errors) + " Nothing was run.")


def check_folder(path: str | os.PathLike, key: str) -> None:
    """Refuse a folder that cannot be used: a file where it (or a parent) should be, or a
    folder this user cannot write into."""
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"needs {existing} as a folder, but that is a file"
        raise UserInputError(
            f"{key}={folder} {where}. Point {key} at a folder (it is created if missing), or move the file away."
        )
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{key}={folder} cannot be written: {existing} is not writable by this user. Point {key} "
            "at a folder you can write to, or change the folder's permissions."
        )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_folders(cfg: Any) -> None:
    """Refuse unusable output, cache and tracking-store folders of a composed config."""
    check_folder(cfg.paths.outputs, "paths.outputs")
    check_folder(cfg.paths.cache, "paths.cache")
    database = sqlite_path(str(cfg.tracking.uri))
    if database is not None:
        if database.is_dir():
            raise UserInputError(
                f"tracking.uri={cfg.tracking.uri} names a folder, not a database file. Point it at a "
                "file, e.g. tracking.uri=sqlite:///$PWD/outputs/mlflow.db."
            )
        check_folder(database.parent, "the folder of tracking.uri")
    location = cfg.tracking.get("artifact_location") if isinstance(cfg.tracking, DictConfig) else None
    if location and "://" not in str(location):
        check_folder(location, "tracking.artifact_location")


def check_shards(cfg: Any) -> None:
    """``runtime.shards`` above 1 runs Ray tasks: Ray must be installed."""
    import importlib.util

    runtime = cfg.get("runtime") if hasattr(cfg, "get") else None
    if runtime is not None and int(runtime.get("shards", 1) or 1) > 1 and importlib.util.find_spec("ray") is None:
        raise UserInputError(
            f"runtime.shards={runtime.shards} splits a job's evaluation into Ray tasks, and Ray is not installed "
            "here. Install it (pip install -e '.[ray]') or leave runtime.shards=1."
        )


def check_config(cfg: Any) -> None:
    """Everything checked before any work: value ranges first, then folders and what the
    settings need installed."""
    check_ranges(cfg)
    check_folders(cfg)
    check_shards(cfg)


def _valid_values(rule: Range | OneOf) -> str:
    text = rule.phrase()
    if rule.null:
        text += f"; null {rule.null}"
    return text


def rules_markdown(schema: type, prefix: str = "") -> str:
    """The table of every ranged or enumerated key under ``schema`` (a dataclass), with its
    valid values and default: the configuration page's table is generated from it."""
    def rows(cls: type, prefix: str) -> list[str]:
        hints = typing.get_type_hints(cls)
        out: list[str] = []
        for spec in dataclasses.fields(cls):
            key, kind = f"{prefix}{spec.name}", hints[spec.name]
            kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
            default = spec.default if spec.default is not dataclasses.MISSING else None
            if RANGE in spec.metadata:
                shown = "null" if default is None else f"{default}"
                out.append(f"| `{key}` | {_valid_values(spec.metadata[RANGE])} | `{shown}` |")
            elif isinstance(kinds[0], type) and issubclass(kinds[0], enum.Enum):
                values = ", ".join(f"`{member.value}`" for member in kinds[0])
                shown = "" if default in (None, "???") else f"`{getattr(default, 'value', default)}`"
                out.append(f"| `{key}` | one of {values} | {shown} |")
            elif isinstance(kinds[0], type) and dataclasses.is_dataclass(kinds[0]):
                out.extend(rows(kinds[0], f"{key}."))
        return out

    return "\n".join(["| key | valid values | schema default |", "|---|---|---|", *rows(schema, prefix)])
