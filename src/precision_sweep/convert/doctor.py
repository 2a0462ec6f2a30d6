"""Conversion doctor: turn a coremltools failure into a message naming the layer, the TF op,
what is known about the failure and how to fix it.

coremltools reports the TF node it could not convert (``Conversion for TF op 'X' not
implemented``, with the node's name) or, for failures inside its op translators, nothing but
a Python error; the node being translated is then found in the traceback (the ``node``
local of the TF frontend's ``convert_graph``). TF node names start with the Keras layer's
name (``functional_1/gconv_1/StatefulPartitionedCall``), which gives the layer.

Failures after the TF frontend (coremltools' graph passes on the frontend program, or its
compression passes on a base package) are not about a TF op: the converter wraps them in
:class:`~precision_sweep.convert.converter.ConversionStepFailed`, and the message names the
failing pass (found in the traceback: the ``pass_name`` local of coremltools'
``apply_pipeline``, or the pass object of ``_apply_graph_pass``) and what was being built:
level, recipe, target, cache entry, and where its input came from.
"""

from __future__ import annotations

import re
from typing import Any

from precision_sweep.errors import SkipJob, UserInputError

RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
_LOOP_OPS = ("While", "StatelessWhile", "TensorListReserve", "TensorListFromTensor", "TensorListGetItem",
             "TensorListSetItem", "TensorListStack", "Less", "LoopCond")
# TensorFlow's NMS ops, which coremltools' TF frontend translates to MIL non_maximum_suppression.
_TF_NMS_OPS = ("NonMaxSuppression", "NonMaxSuppressionV3", "NonMaxSuppressionV5")
_NOT_IMPLEMENTED = re.compile(r"Conversion for TF op '([^']+)' not implemented\.\s*name: \"([^\"]+)\"", re.S)


class ConversionError(UserInputError):
    """coremltools could not convert the model; the message says where and how to fix it."""


def _layers(model: Any) -> list:
    """Every layer of a Keras (3 or tf_keras) model, nested models included."""
    source = getattr(model, "source_model", model)
    found = []
    for layer in getattr(source, "layers", None) or []:
        found.append(layer)
        if getattr(layer, "layers", None):
            found += _layers(layer)
        inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
        if inner is not None and hasattr(inner, "name"):
            found.append(inner)
    return found


def _failing_node(exc: BaseException) -> tuple[str | None, str | None]:
    """(op type, node name) of the TF node coremltools failed on, if it can be told."""
    match = _NOT_IMPLEMENTED.search(str(exc))
    if match:
        return match.group(1), match.group(2)
    outermost = None
    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("node")
        if node is not None and hasattr(node, "op") and hasattr(node, "name") and outermost is None:
            outermost = (str(node.op), str(node.name))
        tb = tb.tb_next
    return outermost or (None, None)


def _failing_pass(exc: BaseException) -> str | None:
    """The coremltools graph pass that raised ``exc`` (innermost), e.g. "'common::const_elimination'
    of the default pipeline", or None when no pass was running."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "apply_pipeline" and isinstance(frame.f_locals.get("pass_name"), str):
            found = f"{frame.f_locals['pass_name']!r} of the {frame.f_locals.get('pass_pipeline')} pipeline"
        elif frame.f_code.co_name == "_apply_graph_pass" and frame.f_locals.get("cur_graph_pass") is not None:
            found = repr(type(frame.f_locals["cur_graph_pass"]).__name__)
        tb = tb.tb_next
    return found


def _explain_step(step, exc: BaseException, cause: str) -> str:
    """The message for a failure after the TF frontend (see the module docstring)."""
    failing = _failing_pass(exc)
    what = {"base": "converting the frontend program into the base package",
            "compression": "compressing the base package",
            "frontend": "running the TF frontend"}[step.stage]
    recipe = f" for precision={step.recipe}" if step.recipe else ""
    entry = f", to be cached as {step.entry}" if step.entry else ""
    where = f"coremltools' graph pass {failing}" if failing else "coremltools"
    message = (
        f"{where} failed while {what} of model={step.model}{recipe} at target {step.target} "
        f"(compute {step.compute}; input: {step.source}{entry}): {cause}. This failed inside "
        "coremltools, after the TF ops were translated, so no layer of the model is to blame. Fix: "
    )
    if "cached" in step.source:
        message += (
            f"delete {step.source.split()[-1]} (precision-sweep rebuilds it) and rerun; if it fails again, "
        )
    if step.stage == "compression":
        message += (
            f"check the precision={step.recipe} settings against coremltools.optimize.coreml's docs, "
            "try another target, and report it with the error.txt of this run."
        )
    else:
        message += (
            f"check that ct.convert alone converts the model for {step.target} at this compute "
            "precision, and report it to coremltools with the error.txt of this run."
        )
    return message


def _layer_of(node_name: str | None, layers: list) -> Any:
    """The layer whose name is a component of ``node_name`` (TF appends ``_<n>`` to it)."""
    if not node_name:
        return None
    by_name = {layer.name: layer for layer in layers}
    for part in node_name.split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in by_name:
                return by_name[candidate]
    return None


def _describe(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _is_keras3(layer: Any) -> bool:
    return type(layer).__module__.startswith("keras.")


def _recurrent(layer: Any) -> bool:
    return type(layer).__name__ in RECURRENT and not getattr(layer, "unroll", False)


def explain_conversion_error(exc: BaseException, model: Any) -> BaseException:
    """Return an exception explaining why coremltools failed on ``model``.

    Parameters
    ----------
    exc
        What ``coremltools.convert`` (or the variant build around it) raised.
    model
        The :class:`~precision_sweep.data.models.LoadedModel` (or a Keras model) being converted.

    Returns
    -------
    BaseException
        A :class:`ConversionError` naming the layer and TF op where known, what is known about
        the failure and how to fix it; ``exc`` itself when it already is a user error, a skip or
        an interruption.
    """
    from precision_sweep.convert.converter import ConversionStepFailed

    step = None
    if isinstance(exc, ConversionStepFailed):
        step, exc = exc.step, exc.__cause__
    if isinstance(exc, (UserInputError, SkipJob)) or not isinstance(exc, Exception):
        return exc
    layers = _layers(model)
    op, node = _failing_node(exc)
    layer = _layer_of(node, layers)
    name = getattr(model, "name", None) or "the model"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    at = f"TF op {op!r} (node {node!r})" if op else "an unknown TF op"
    where = f"{_describe(layer)}, {at}" if layer is not None else at
    cause = f"coremltools raised {type(exc).__name__}: {first}"

    if op in _TF_NMS_OPS and "score_threshold" in str(exc):
        # coremltools 9's TF frontend calls mb.non_maximum_suppression with score_threshold, an
        # input the iOS17 opset removed (ops/defs/iOS17/tensor_operation.py): no conversion at
        # iOS17 and later exists, so the cell cannot deploy.
        return SkipJob(
            f"coremltools 9 converts TensorFlow's NMS ({where} of model={name}) only for iOS15 and iOS16: its "
            "TF frontend passes score_threshold, which the iOS17 non_maximum_suppression no longer takes. Sweep "
            "this model at target=ios15 or ios16 (the package runs on later iOS too), or take the NMS out of "
            "the model and set task.compare.nms=outside."
        )
    if step is not None and (step.stage != "frontend" or (op is None and _failing_pass(exc))):
        error = ConversionError(_explain_step(step, exc, cause))
        error.__cause__ = exc
        return error
    recurrent = [lay for lay in layers if _recurrent(lay) and _is_keras3(lay)]
    if recurrent and (layer is None or layer in recurrent or (op or "") in _LOOP_OPS or "while" in (node or "").lower()):
        target = layer if layer in recurrent else recurrent[0]
        message = (
            f"coremltools cannot convert {_describe(target)} of model={name} (at {at}; {cause}). "
            "Known limitation: Keras 3 recurrent layers (LSTM, GRU, SimpleRNN) trace to a TF while "
            "loop that coremltools 9 fails to translate. Fix: rebuild the layer with unroll=True "
            "(fixed sequence length) and copy the weights, or save the model with tf_keras (Keras 2) "
            "and run it with model=tf_keras, whose recurrent layers convert."
        )
    elif layer is not None and type(layer).__name__ in ("Conv1D", "Conv2D", "Conv3D") and getattr(layer, "groups", 1) > 1:
        groups = int(layer.groups)
        filters = int(getattr(layer, "filters", 0))
        message = (
            f"coremltools cannot convert {where} of model={name}: a grouped convolution (groups={groups}, "
            f"filters={filters}). Known limitation: Keras 3 compiles grouped Conv into an XLA function "
            "call (StatefulPartitionedCall) that coremltools does not translate. Fix: where groups equals "
            "the input channels, rewrite it as DepthwiseConv2D(kernel_size, depth_multiplier=filters // "
            "groups); otherwise split the channels into the groups (tf.split), "
            f"apply one Conv2D per group and Concatenate. ({cause})"
        )
    elif layer is not None and type(layer).__name__ == "Lambda":
        message = (
            f"coremltools cannot convert {where} of model={name}: the Lambda layer's Python function "
            f"uses TF op {op!r}, which coremltools 9 does not support. Fix: rewrite the function with "
            "ops coremltools converts (basic math, matmul, reshape, activations), or as a custom layer "
            "built from them. Lambda layers also load only with model.safe_mode=false: prefer a "
            f"registered custom layer. ({cause})"
        )
    elif op and _NOT_IMPLEMENTED.search(str(exc)):
        message = (
            f"coremltools 9 has no conversion for {where} of model={name}. Fix: replace the layer by "
            "supported operations (see coremltools' TensorFlow op support list), or register a "
            "composite op with @register_tf_op that builds it from MIL ops (coremltools guide: "
            "'Composite Operators')."
        )
    else:
        message = (
            f"coremltools failed to convert model={name} at {where} ({cause}). Nothing specific is known "
            "about this failure; try another target (target=...), check the model converts with "
            "ct.convert alone, and report it with the error.txt of this run."
        )
    error = ConversionError(message)
    error.__cause__ = exc
    return error
