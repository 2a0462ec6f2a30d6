"""Map MIL variable and op names back to the Keras layers that produced them.

The TensorFlow frontend names ops after TF graph nodes, e.g. ``digits_cnn_1/conv1_1/BiasAdd``,
and the saved program replaces ``/`` with ``_``: ``digits_cnn_1_conv1_1_BiasAdd``. Keras 3
name scopes are ``<layer>_<n>``, so after removing the model's own scope the name starts with
the layer name. Names coremltools invents (``transpose_3``, ``max_pool_0``) map to no layer.
"""

from __future__ import annotations

import re
from typing import Iterable


def sanitize(name: str) -> str:
    """A TF/MIL op name as the saved program spells it (``/`` and other symbols become ``_``)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def keras_layer_names(keras_model) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """(layer names, model name, input layer names) of a Keras 3 or tf_keras model: what
    :class:`LayerMapper` is built from (and what a model card keeps of the layers)."""
    layers = tuple(layer.name for layer in keras_model.layers)
    inputs = tuple(layer.name for layer in keras_model.layers if type(layer).__name__ == "InputLayer")
    return layers, keras_model.name, inputs


class LayerMapper:
    """Find the Keras layer of a MIL name.

    Parameters
    ----------
    layer_names
        The Keras model's layer names (input layers may be included; they are ignored when
        ``input_names`` lists them).
    model_name
        The Keras model's name, whose scope prefixes every op name.
    """

    def __init__(self, layer_names: Iterable[str], model_name: str = "", input_names: Iterable[str] = ()):
        skip = set(input_names)
        # Longest first (a layer whose name extends another's wins), then by name: the same order
        # in every process.
        self.layers = sorted({n for n in layer_names if n and n not in skip}, key=lambda n: (-len(n), n))
        self.prefix = re.compile(rf"^{re.escape(sanitize(model_name))}(?:_\d+)?_") if model_name else None
        self._at_start = [(n, re.compile(rf"^{re.escape(sanitize(n))}(?:_\d+)?_")) for n in self.layers]
        self._anywhere = [(n, re.compile(rf"(?:^|_){re.escape(sanitize(n))}(?:_\d+)?_")) for n in self.layers]

    @classmethod
    def from_keras(cls, keras_model) -> "LayerMapper":
        return cls(*keras_layer_names(keras_model))

    @classmethod
    def of_model(cls, model) -> "LayerMapper | None":
        """The mapper of a loaded model: from its Keras model, or from the legacy Keras 2 model
        that a ``tf_keras`` source converts through a concrete function; None for a SavedModel
        (no layers). A model read from its card maps from the card's names (nothing loads)."""
        names = getattr(model, "keras_layers", None)
        if names is not None:
            return cls(*names)
        if getattr(model, "is_loaded", True) is False:
            return None  # its card says it has no Keras layers
        for candidate in (model.keras_model, getattr(model, "source_model", None)):
            if hasattr(candidate, "layers"):
                return cls.from_keras(candidate)
        return None

    def layer_of(self, *names: str) -> str:
        """The layer of the first of ``names`` that maps to one, or ``""``."""
        for name in names:
            if not name:
                continue
            name = sanitize(name)
            if self.prefix is not None:
                # Only names inside the model's scope are layer ops ("max_pool_0" is not
                # layer "pool").
                if self.prefix.match(name):
                    rest = self.prefix.sub("", name, count=1)
                    for layer, pattern in self._at_start:
                        if pattern.match(rest):
                            return layer
                continue
            for layer, pattern in self._anywhere:
                if pattern.search(name):
                    return layer
        return ""
