"""The search space: which weight settings each weight-bearing op may take.

Built from the fp16 program (the ops :func:`~precision_sweep.convert.per_op.weight_ops`
finds) and the ``precision.search`` config: ``choices`` for every op, ``layers`` for named
ones (a Keras layer name covers every op the layer produced; a program op name covers that op).
:func:`check_search_config` refuses what can be refused before any conversion; the names that
only the program knows are checked when the space is built, before any trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from precision_sweep.convert.per_op import FORMS, UnknownChoiceError, WeightOp, parse_choice, required_spec
from precision_sweep.errors import UserInputError


@dataclass(frozen=True)
class Layer:
    """One op of the space: the program op, the Keras layer it came from ("" if none), its
    weight count and its settings, most bits first."""

    op: str
    op_type: str
    weights: int
    keras_layer: str
    choices: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.keras_layer or self.op


@dataclass(frozen=True)
class Space:
    layers: tuple[Layer, ...]

    @property
    def exhaustive_count(self) -> int:
        """Evaluations an exhaustive grid over the space would need: every combination."""
        return math.prod(len(layer.choices) for layer in self.layers)

    @property
    def greedy_steps_at_most(self) -> int:
        """Points the greedy fill can evaluate: its start, then one step back per setting."""
        return 1 + sum(len(layer.choices) - 1 for layer in self.layers)


def _ordered(labels) -> tuple[str, ...]:
    unique = list(dict.fromkeys(str(label) for label in labels))
    return tuple(sorted(unique, key=lambda label: -parse_choice(label).bits_per_weight))


def check_search_config(search, target_spec: int, target_name: str, mapper=None) -> None:
    """One :class:`UserInputError` paragraph for a space that cannot be searched, before any
    work: an unknown setting, a setting the target cannot hold, a named layer that is no layer
    of the Keras model (``mapper``, a :class:`~precision_sweep.data.layers.LayerMapper`: a name
    must be a layer's, or an op name of one; :func:`build_space` checks op names exactly), or a
    space with nothing cheaper than fp16 to try."""
    labels = [*search.choices, *(label for labels in search.layers.values() for label in labels)]
    try:
        parsed = [parse_choice(label) for label in labels]
    except UnknownChoiceError as exc:
        raise UserInputError(f"precision.search: {exc} Fix precision.search.choices or precision.search.layers.") from None
    if not parsed:
        raise UserInputError("precision.search.choices is empty: give the settings every layer may take, "
                             f"e.g. precision.search.choices=[fp16,int8,pal4,pal2] (forms: {FORMS}).")
    needed, why = required_spec(labels)
    if needed > target_spec:
        raise UserInputError(
            f"precision.search cannot deploy at target={target_name}: {why}. Remove that setting from "
            "precision.search.choices/layers, or choose a later target (e.g. target=ios18)."
        )
    if all(choice.kind == "float" for choice in parsed):
        raise UserInputError("precision.search has nothing to search: every setting is fp16. Add compressed settings, "
                             "e.g. precision.search.choices=[fp16,int8,pal4,pal2].")
    if mapper is not None:
        unknown = [name for name in search.layers if name not in mapper.layers and not mapper.layer_of(str(name))]
        if unknown:
            raise UserInputError(
                f"precision.search.layers names {', '.join(map(repr, unknown))}, which the model does not have. "
                f"Its layers: {', '.join(sorted(mapper.layers)[:40])}. Name a Keras layer (or an op of one)."
            )


def build_space(ops: list[WeightOp], layer_of, search) -> Space:
    """The :class:`Space` of ``ops`` (``layer_of(op_name)`` gives the Keras layer or "") under
    the ``precision.search`` config; a ``layers`` entry naming neither a Keras layer of these
    ops nor an op is a :class:`UserInputError`."""
    default = _ordered(search.choices)
    named = {str(name): _ordered(labels) for name, labels in search.layers.items()}
    keras = {op.name: layer_of(op.name) or "" for op in ops}
    known = set(keras.values()) | set(keras)
    unknown = [name for name in named if name not in known]
    if unknown:
        listed = ", ".join(sorted({v or k for k, v in keras.items()})[:40])
        raise UserInputError(
            f"precision.search.layers names {', '.join(map(repr, unknown))}, which no weight-bearing op of the model "
            f"comes from. The searchable layers (Keras layer, or op name where none): {listed}."
        )
    layers = []
    for op in ops:
        choices = named.get(op.name) or named.get(keras[op.name]) or default
        layers.append(Layer(op.name, op.op_type, op.weights, keras[op.name], choices))
    if not layers:
        raise UserInputError("The model has no weight-bearing op with enough weights to compress "
                             "(precision.search.weight_threshold); there is nothing to search.")
    return Space(tuple(layers))
