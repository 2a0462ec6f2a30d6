"""A function named by a Hydra ``_target_`` dotted path (a dataset's function, a task's
comparison, a user's metric), resolved by Hydra's own ``get_method``; one paragraph naming the
config key and the fix when it cannot be imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from precision_sweep.errors import UserInputError


def resolve_function(target: str, key: str, expects: str) -> Callable[..., Any]:
    """The function ``target`` names; ``key`` is the config key that gave it (shown as
    ``key=target``) and ``expects`` says what it must be (e.g. "a function of (labels, outputs)")."""
    from hydra.utils import get_method

    try:
        return get_method(target)
    except (ImportError, ValueError) as exc:
        module = target.rpartition(".")[0] or target
        raise UserInputError(
            f"{key}={target} cannot be loaded as a function ({str(exc).splitlines()[-1]}). It must be the "
            f"dotted path of {expects} that Python can import in the job's environment: check the spelling, "
            f"install the package that holds {module!r} (or put its folder on PYTHONPATH), and name the "
            "function itself, not its module."
        ) from exc


def import_modules(names, key: str, purpose: str) -> None:
    """Import each module of ``names`` (the config key ``key`` lists them, for ``purpose``); one
    paragraph naming the module and the fix when one cannot be imported."""
    import importlib

    for name in names:
        try:
            importlib.import_module(str(name))
        except ImportError as exc:
            raise UserInputError(
                f"{key} lists {name!r}, which cannot be imported ({str(exc).splitlines()[-1]}). It is imported "
                f"{purpose}: check the spelling, install the package that holds it or put its folder on "
                "PYTHONPATH, so that Python can import it in the job's environment."
            ) from exc
