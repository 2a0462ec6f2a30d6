"""Installed versions of the libraries that convert and run the model, for cache keys.

Read from the installed distributions' metadata, so a job whose entries are cached need not
import TensorFlow, Keras or coremltools (seconds per process) to know its keys. The strings are
those of the modules' ``__version__`` (TensorFlow 2.21.0, Keras 3.15.1, coremltools 9.0 here),
so the keys of existing entries do not change.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import metadata

# Module -> the distributions that install it, most common first (TensorFlow ships under
# several names: one of them is installed).
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tensorflow-gpu",
                   "tf-nightly", "tf-nightly-cpu"),
    "keras": ("keras",),
    "coremltools": ("coremltools",),
    "tf_keras": ("tf-keras", "tf_keras"),
}


@cache
def library_version(module: str) -> str:
    """The installed version of ``module`` (``tensorflow``, ``keras``, ``coremltools``, ``tf_keras``).

    Without distribution metadata (a build put on ``sys.path`` by hand) the module itself is
    imported and asked, which is what the keys always used; a module that is not installed
    raises its ``ImportError`` then, as the import did before.
    """
    for distribution in DISTRIBUTIONS.get(module, (module,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return str(importlib.import_module(module).__version__)
