"""The executor: a plain ordered loop over the plan's steps with a dict of named values.

Dtype rules (the same under every numerics model):

* feeds are cast to the dtype each program input declares;
* every op's result is cast to the dtype its output declares, so fp16 tensors are stored as
  ``float16`` (overflow becomes +-inf, tiny values flush exactly as float16 rounding does);
* how an fp16 op computes in between is the business of the unit model its step is placed
  on (:mod:`.numerics`, :mod:`.placement`): whether multi-step kernels see fp32 copies, the
  :class:`~.ops._accumulate.Accumulator` accumulating kernels sum with, and on the Neural
  Engine the datapath rules (:mod:`.datapath`).

Nested blocks (``while_loop``/``cond``) run through :func:`run_block`, the same loop over the
block's steps on a scope that sees the enclosing values; the same dtype rules hold there (block
inputs are cast to their declared dtypes, every op output to its own). A list value
(:class:`~precision_sweep.emulator.ops.control_flow.TensorList`) is cast element-wise.

A capture run (``capture=True``) also records the values computed inside nested blocks, once
per call of the block, under *qualified names* (:func:`qualified_name`): ``name@3`` is
``name`` in the 4th iteration (0-based) of its ``while_loop``, ``name@3.1`` the 2nd iteration
of an inner loop during the 4th of the outer one. A ``cond`` adds no level: the branch that
ran records its values under the enclosing path (its own variable names tell which branch
ran). A ``while_loop``'s ``_cond`` block call ``k`` is checked before body call ``k``. The
optional ``dataflow`` map gives, per recorded name, the qualified names its op read (a loop
output reads the last body iteration's result, a block input the value bound to it).
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any, Mapping

import numpy as np

from precision_sweep.emulator import datapath
from precision_sweep.emulator.allocator import reuse_freed_memory
from precision_sweep.emulator.numerics import (
    ACCUMULATING_OPS,
    MAC_OPS,
    ONE_OPERATION_OPS,
    READS_FP16_OPERANDS,
    SINGLE_ROUNDING_OPS,
    TABULATED_OPS,
    VALUE_EXACT_OPS,
)
from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.ops._casts import (
    float16_nan_to_zero,
    float16_to_float32,
    float32_to_float16,
    float32_to_float16_nan_zero,
)
from precision_sweep.emulator.ops._lookup import lookup_float16
from precision_sweep.emulator.ops._threads import single_threaded_blas
from precision_sweep.emulator.ops.control_flow import TensorList
from precision_sweep.emulator.plan import Block, Plan, Step

reuse_freed_memory()  # as early as possible: arrays mmapped before are returned on free

FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)


def _upcast(value: Any, flush: bool = False) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == FLOAT16:
        return float16_to_float32(value, flush)
    if isinstance(value, list):
        return [_upcast(v, flush) for v in value]
    return value


def _cast(value: Any, dtype: np.dtype) -> Any:
    if isinstance(value, TensorList):
        return value.astype(dtype)
    value = np.asarray(value)
    if dtype == FLOAT16 and value.dtype == FLOAT32:
        return float32_to_float16(value)  # numpy's cast, bit for bit, without its slow path
    return value.astype(dtype, copy=False)


def _store_from_ane(value: Any, dtype: np.dtype) -> Any:
    """:func:`_cast` of an ANE op's result, with its NaNs (indeterminate forms) as +0."""
    value = np.asarray(value)
    if dtype == FLOAT16 and value.dtype == FLOAT32:
        return float32_to_float16_nan_zero(value)
    if value.dtype == FLOAT16 and dtype == FLOAT16:
        return float16_nan_to_zero(value)
    return _cast(datapath.indeterminate_to_zero(value), dtype)


def _wants_upcast(step: Step) -> bool:
    if step.blocks:
        return False  # control flow computes nothing itself; its block ops decide
    if step.op_type in VALUE_EXACT_OPS or step.op_type in SINGLE_ROUNDING_OPS:
        return False  # the same bits either way (see numerics)
    if step.op_type in ACCUMULATING_OPS or step.placement is None:
        return True  # accumulators take fp32 copies of the fp16 values
    if step.op_type in ONE_OPERATION_OPS:
        return True  # one rounding either way (see numerics): the faster way
    return step.placement.model.fp32_intermediates


def _flushes_operands(step: Step) -> bool:
    """M1-class engines flush fp16 subnormal operands inside the multiply-accumulate."""
    model = step.placement.model if step.placement is not None else None
    return model is not None and model.ane_datapath and step.op_type in MAC_OPS and model.accumulation.flush_subnormals


def prepare(step: Step) -> None:
    """Upcast once the fp16 constants (weights) of a step that computes from fp32 copies, as
    :func:`run_step` would on every call."""
    if any(dtype == FLOAT16 for _, dtype in step.outputs) and _wants_upcast(step):
        flush = _flushes_operands(step)
        step.const_kwargs = {k: _upcast(v, flush) for k, v in step.const_kwargs.items()}


def run_block(block: Block, env: Mapping[str, Any], *values: Any, frame: _Frame | None = None) -> tuple:
    """Run a nested block on ``values`` (its inputs, in order) and return its outputs.

    The block's own values live in a fresh scope chained to ``env``, so its ops see the
    enclosing block's values and nothing it computes leaks out. With ``frame`` (a capture
    run), every step's outputs are recorded under the frame's iteration path.
    """
    if len(values) != len(block.inputs):
        raise RuntimeError(f"block takes {len(block.inputs)} inputs, got {len(values)}")
    scope: ChainMap = ChainMap({}, env)
    for (name, dtype), value in zip(block.inputs, values):
        scope[name] = _cast(value, dtype)
    for step in block.steps:
        if frame is None:
            run_step(step, scope)
        else:
            frame.run(step, scope)
    return tuple(scope[name] for name in block.outputs)


def _block_callable(block: Block, env: Mapping[str, Any]):
    def call(*values: Any) -> tuple:
        return run_block(block, env, *values)

    return call


def qualified_name(name: str, path: tuple[int, ...]) -> str:
    """``name`` as a capture records it: itself at the top level, ``name@3`` in iteration 3 of
    its loop, ``name@3.1`` in iteration 1 of an inner loop during iteration 3 of the outer."""
    return f"{name}@{'.'.join(map(str, path))}" if path else name


def _names_read(step: Step) -> list[str]:
    read: list[str] = []
    for names in step.var_kwargs.values():
        read.extend(names if isinstance(names, list) else [names])
    return read


class _Frame:
    """Where a capture run is: the iteration path of the enclosing loops, the qualified name of
    every value visible there, and the capture's values and dataflow it records into."""

    def __init__(self, values: dict, dataflow: dict | None, path: tuple[int, ...] = (),
                 names: ChainMap | None = None):
        self.values = values
        self.dataflow = dataflow
        self.path = path
        self.names = names if names is not None else ChainMap()

    def source(self, name: str) -> str:
        """The qualified name of the value ``name`` holds here (constants and program inputs,
        never recorded, keep their own)."""
        return self.names.get(name, name)

    def child(self, path: tuple[int, ...]) -> _Frame:
        return _Frame(self.values, self.dataflow, path, self.names.new_child())

    def run(self, step: Step, env: Mapping[str, Any]) -> None:
        """Run ``step`` and record its tensor outputs (list values are not recorded)."""
        calls = _BlockCalls(self, step, env) if step.blocks else None
        run_step(step, env, calls=calls)
        read = [self.source(n) for n in _names_read(step)]
        sources = calls.sources() if calls is not None else None
        for index, (name, _) in enumerate(step.outputs):
            qualified = qualified_name(name, self.path)
            self.names[name] = qualified
            value = env[name]
            if not isinstance(value, TensorList):
                self.values[qualified] = (step.op_type, value)
            if self.dataflow is not None:
                self.dataflow[qualified] = read if sources is None else sources[index:index + 1]


class _BlockCalls:
    """The block callables of one control-flow step in a capture run.

    A ``while_loop`` numbers the calls of each of its blocks (one level of the iteration path)
    and binds each call's block inputs to the previous body call's outputs (the initial loop
    variables first); a ``cond`` branch runs on the enclosing path."""

    def __init__(self, frame: _Frame, step: Step, env: Mapping[str, Any]):
        self.frame = frame
        self.env = env
        self.loops = step.op_type == "while_loop"
        names = step.var_kwargs.get("loop_vars", [])
        self.loop_sources = [frame.source(n) for n in (names if isinstance(names, list) else [names])]
        self.branch_sources: list[str] = []
        self.counts: dict[str, int] = {}

    def callable(self, arg: str, block: Block):
        def call(*values: Any) -> tuple:
            count = self.counts.get(arg, 0)
            self.counts[arg] = count + 1
            frame = self.frame.child(self.frame.path + (count,) if self.loops else self.frame.path)
            for (name, _), source in zip(block.inputs, self.loop_sources):
                frame.names[name] = source
            outputs = run_block(block, self.env, *values, frame=frame)
            sources = [frame.source(n) for n in block.outputs]
            if not self.loops:
                self.branch_sources = sources
            elif arg == "_body":
                self.loop_sources = sources
            return outputs

        return call

    def sources(self) -> list[str]:
        """Per output of the step, the qualified name of the block value it returns."""
        return self.loop_sources if self.loops else self.branch_sources


def _root(array: np.ndarray) -> Any:
    """The object that owns ``array``'s memory (itself, or the base of its chain of views)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _free_buffer(env: Mapping[str, Any], name: str, argument: Any, dtype: np.dtype) -> np.ndarray | None:
    """``env[name]``'s array if the step may write its result there: the kernel receives that
    very array, of the output's dtype, contiguous and writeable, and no other live value is a
    view of the same memory."""
    value = env[name]
    if argument is not value or not isinstance(value, np.ndarray) or value.dtype != dtype:
        return None
    if not (value.flags.c_contiguous and value.flags.writeable):
        return None
    root = _root(value)
    for other_name, other in env.items():
        if other_name != name and isinstance(other, np.ndarray) and _root(other) is root:
            return None
    return value


# Every float16 bit pattern, in order: the input a tabulated step is run on once.
_EVERY_HALF = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
# Tabulated steps' maps, by step signature (op, kernel, unit model, NaN coercion, constants).
_HALF_TABLES: dict[tuple, np.ndarray] = {}


def _scalar_key(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return (np.asarray(value).dtype.str, np.asarray(value).tobytes())
    raise TypeError  # an array constant: the step is not a function of x's element alone


def _half_table_key(step: Step, x: Any) -> tuple | None:
    """The signature of a step that runs as a float16 lookup table, or None if it cannot."""
    if step.op_type not in TABULATED_OPS or list(step.var_kwargs) != ["x"] or len(step.outputs) != 1:
        return None
    if step.outputs[0][1] != FLOAT16 or not isinstance(x, np.ndarray) or x.dtype != FLOAT16 or x.ndim == 0:
        return None
    try:
        constants = tuple(sorted((k, _scalar_key(v)) for k, v in step.const_kwargs.items()))
    except TypeError:
        return None
    model = step.placement.model if step.placement is not None else None
    return (step.op_type, step.fn, model, bool(step.coerce), constants)


def _half_table(step: Step, key: tuple) -> np.ndarray:
    """The step's map from each float16 bit pattern to its float16 result, computed by running
    the step itself (the unit model's upcasts, kernel and datapath rules) on every pattern."""
    table = _HALF_TABLES.get(key)
    if table is None:
        scope = {step.var_kwargs["x"]: _EVERY_HALF}
        _compute_step(step, scope)
        table = np.ascontiguousarray(scope[step.outputs[0][0]], dtype=FLOAT16).reshape(-1)
        if table.size != _EVERY_HALF.size:
            raise RuntimeError(f"MIL op {step.op_type!r} is not element-wise: {table.size} results for {_EVERY_HALF.size} inputs")
        _HALF_TABLES[key] = table
    return table


def run_step(step: Step, env: dict[str, Any], reuse_buffers: bool = False, calls: _BlockCalls | None = None) -> None:
    """Execute one step, reading its inputs from ``env`` and writing its outputs there. With
    ``reuse_buffers`` (a run that frees each value after its last reader), a step marked
    ``reuses`` writes its result into that input's buffer when nothing else shares it.
    ``calls`` (a capture run) builds the callables of a control-flow step's blocks.

    A float16 element-wise step (numerics.TABULATED_OPS) runs as a lookup in the table of its
    results for every float16 value, which the same step computed (:func:`_half_table`)."""
    if not step.blocks and step.var_kwargs.get("x") is not None:
        x = env[step.var_kwargs["x"]] if isinstance(step.var_kwargs["x"], str) else None
        key = _half_table_key(step, x)
        if key is not None:
            table = _half_table(step, key)
            env[step.outputs[0][0]] = lookup_float16(table, x)
            return
    _compute_step(step, env, reuse_buffers, calls)


def _compute_step(step: Step, env: dict[str, Any], reuse_buffers: bool = False, calls: _BlockCalls | None = None) -> None:
    """:func:`run_step` by the step's kernel."""
    kwargs = dict(step.const_kwargs)
    for arg, names in step.var_kwargs.items():
        kwargs[arg] = [env[n] for n in names] if isinstance(names, list) else env[names]
    for arg, block in step.blocks.items():
        kwargs[arg] = _block_callable(block, env) if calls is None else calls.callable(arg, block)
    model = step.placement.model if step.placement is not None else None
    on_ane = model is not None and model.ane_datapath
    if on_ane and step.coerce:
        for arg in step.coerce:
            kwargs[arg] = datapath.coerce_nan(kwargs[arg])
    fp16 = any(dtype == FLOAT16 for _, dtype in step.outputs)
    if fp16 and _wants_upcast(step) and step.op_type not in READS_FP16_OPERANDS:  # constants: prepare()
        flush = _flushes_operands(step)
        kwargs = {k: _upcast(v, flush) if k in step.var_kwargs else v for k, v in kwargs.items()}
    accumulator = step.accumulator if fp16 else FP32
    if step.op_type in ACCUMULATING_OPS:
        kwargs["accumulator"] = accumulator
    if reuse_buffers and step.reuses is not None:
        buffer = _free_buffer(env, step.reuses, kwargs.get("x"), step.outputs[0][1])
        if buffer is not None:
            kwargs["out"] = buffer
    try:
        result = step.fn(**kwargs)
    except Exception as exc:  # add the op's identity to any kernel failure
        raise RuntimeError(f"MIL op {step.op_type!r} ({step.name!r}) failed: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(step.outputs):
        raise RuntimeError(
            f"kernel for {step.op_type!r} returned {len(results)} values, "
            f"the program declares {len(step.outputs)}"
        )
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        store = _cast
        if on_ane and fp16:
            adjust = datapath.RULES.get(step.op_type)
            if adjust is not None and len(results) == 1:
                results = (adjust(kwargs, results[0], model, accumulator),)
            if step.op_type not in VALUE_EXACT_OPS:  # those only move values: no new NaN
                store = _store_from_ane
        for (name, dtype), value in zip(step.outputs, results):
            env[name] = store(value, dtype)


def execute(
    plan: Plan,
    feeds: dict[str, np.ndarray],
    capture: bool = False,
    dataflow: dict[str, list[str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, np.ndarray]]]:
    """Run the plan on ``feeds``.

    Returns the program outputs and, if ``capture``, every intermediate tensor as
    ``(op type, value)``: top-level ones keyed by MIL variable name, those computed inside
    ``while_loop``/``cond`` blocks by :func:`qualified_name` (one entry per loop iteration; list
    values are not captured). With ``capture``, ``dataflow`` (if given) is filled with each
    recorded name's inputs as qualified names, lists included. Without ``capture``, the plan's
    lean steps run (zero pads folded into their convs), each value is dropped after its last
    reader, and an activation may write into its input's buffer.
    """
    reuse_freed_memory()  # freed arrays' pages serve the next ones warm (see allocator)
    env: dict[str, Any] = dict(plan.constants)
    for name, (_, dtype) in plan.inputs.items():
        env[name] = np.asarray(feeds[name]).astype(dtype, copy=False)
    intermediates: dict[str, tuple[str, np.ndarray]] = {}
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"), single_threaded_blas():
        if not capture:
            for step, released in zip(plan.lean_steps, plan.releases):
                run_step(step, env, reuse_buffers=True)
                for name in released:
                    del env[name]
            return {name: env[name] for name in plan.outputs}, intermediates
        frame = _Frame(intermediates, dataflow)
        for step in plan.steps:
            frame.run(step, env)
    return {name: env[name] for name in plan.outputs}, intermediates
