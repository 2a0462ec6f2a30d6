"""Load a converted ML program and compile it into a flat, ordered execution plan.

Sources: a saved ``.mlpackage`` path, a ``coremltools.models.MLModel``, or an in-memory
pymil ``Program``. The proto is parsed back into pymil with coremltools' own milproto loader,
so names, dtypes and constant values are exactly those stored in the package.

Compilation resolves every op to its registered kernel (refusing unknown ops up front,
before any data runs), turns constant inputs into numpy values once, and folds ops whose
inputs are all constant (the ``constexpr_*`` weight decompression ops in particular), so that
prediction is a plain loop over the remaining steps.

Ops with nested blocks (``while_loop``, ``cond``) stay one step of that loop: each of their
blocks is compiled the same way into a :class:`Block` sub-plan kept on the step, and the
executor hands the kernel one callable per block under the spec's argument name
(``_cond``/``_body``, ``_true_fn``/``_false_fn``). Block ops read outer variables by name, so
MIL's lexical scoping is kept as it is; such steps are never folded.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from precision_sweep.emulator.nn_program import NN_TYPES, nn_program, typed_for_units
from precision_sweep.emulator.ops._accumulate import Accumulator
from precision_sweep.emulator.ops.activation import FOLDS_INTO_CONV
from precision_sweep.emulator.plan import Block, FlexibleDim, Plan, Step
from precision_sweep.emulator.registry import KERNELS, WRITES_INTO_X, supported_ops


class UnsupportedOpError(NotImplementedError):
    """The program contains a MIL op type that has no emulator kernel."""


class UnsupportedModelError(UnsupportedOpError):
    """The model is neither an ML program nor a NeuralNetwork."""


# The spec's argument name of each nested block of a control-flow op, in ``op.blocks`` order.
BLOCK_ARGUMENTS = {"while_loop": ("_cond", "_body"), "cond": ("_true_fn", "_false_fn")}
FLOAT32 = np.dtype(np.float32)


def numpy_dtype(mil_dtype) -> np.dtype:
    """The numpy dtype that stores a MIL builtin dtype (fp16 -> float16, int8 -> int8, ...)."""
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(mil_dtype))


def var_dtype(var) -> np.dtype:
    """The numpy dtype of a variable; a list variable (``List[...]``) gives its elements'."""
    from coremltools.converters.mil.mil.var import ListVar

    if isinstance(var, ListVar):
        return numpy_dtype(var.elem_type.get_primitive())
    return numpy_dtype(var.dtype)


def load_program(source, compute_units: str = "cpu_only") -> tuple[Any, int | None]:
    """Return ``(pymil Program, specification version)`` for a package path, MLModel or Program.

    An ML program is read back as stored; a NeuralNetwork (``.mlmodel``) is translated
    (:mod:`.nn_program`), typed fp16 when ``compute_units`` include the GPU or Neural Engine."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Program

    if isinstance(source, Program):
        return source, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no Core ML model at {path}")
        if path.is_file():  # a .mlmodel: read once (an MLModel would hold a copy of its weights)
            return _nn_program_of(lambda: ct.utils.load_spec(str(path)), compute_units)
        source = ct.models.MLModel(str(path), skip_model_load=True)
    if not isinstance(source, ct.models.MLModel):
        raise TypeError(f"cannot load an ML program from {type(source).__name__}")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_to_pymil

    spec = source.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        return _nn_program_of(lambda: spec, compute_units)
    program = milproto_to_pymil(
        spec, spec.specificationVersion, file_weights_dir=source.weights_dir or ""
    )
    return program, spec.specificationVersion


def _nn_program_of(read_spec: Callable[[], Any], compute_units: str) -> tuple[Any, int]:
    """The program of the NeuralNetwork spec ``read_spec()`` returns, typed for
    ``compute_units``, with the spec's version. The spec is let go before the program is typed,
    so its weights, their fp32 arrays and their fp16 copies are never all held at once."""
    spec = read_spec()
    kind = spec.WhichOneof("Type")
    if kind not in NN_TYPES:
        raise UnsupportedModelError(
            f"The emulator executes ML programs and NeuralNetwork models; this is a {kind} model (a pipeline, "
            "tree ensemble or other model type). Evaluate the neural network inside it on its own, or run with "
            "runtime=coreml on macOS."
        )
    version = int(spec.specificationVersion)
    program = nn_program(spec)
    del spec
    return typed_for_units(program, compute_units), version


def _const_value(var) -> Any:
    value = var.val
    if isinstance(value, np.ndarray):
        return value.astype(numpy_dtype(var.dtype), copy=False)
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int, np.integer)) for v in value):
        # a list constant (``classify``'s classes): an array, so plans store it without pickle
        return np.asarray([str(v) for v in value]) if isinstance(value[0], str) else np.asarray(value, dtype=np.int64)
    return value


def _output_dtype(op, out, constants: dict) -> np.dtype:
    """The dtype that stores ``out``. ``classify`` declares a string (or int64) label and a
    dictionary: the emulator keeps the label as an array of the classes' dtype and the
    dictionary as the fp32 probabilities in class order (see ``ops/classify.py``)."""
    if op.op_type == "classify":
        if out is op.outputs[0]:
            return np.asarray(constants[op.inputs["classes"].name]).dtype
        return np.dtype(np.float32)
    return var_dtype(out)


def compile_plan(program, function_name: str = "main", placer: Callable | None = None) -> Plan:
    """Compile one function of a pymil program into a :class:`Plan`.

    ``placer(op, in_control_flow)`` returns the :class:`~.placement.Placement` of each op that
    remains a step (constants and folded ops run at load time, in fp32); without it, every
    step computes in fp32 from fp32 copies (no unit model).
    """
    from precision_sweep.emulator import ops  # noqa: F401  (registers the kernels)

    function = program.functions[function_name]
    _refuse_unsupported(list(_walk(function.operations)))
    plan = Plan(
        inputs={name: (tuple(FlexibleDim.of(d) for d in var.shape), var_dtype(var)) for name, var in function.inputs.items()},
        outputs=[var.name for var in function.outputs],
    )
    plan.steps = _compile_operations(function.operations, plan, placer, False)
    _drop_unread_constants(plan)
    _mark_boundaries(plan)
    plan.lean_steps = _fold_activations(plan, _fold_zero_pads(plan))
    plan.releases = _releases(plan)
    _mark_reuses(plan)
    return plan


def _drop_unread_constants(plan: Plan) -> None:
    """Forget the constants no step reads by name and no output is: the inputs of folded ops
    (an fp32 weight a folded cast made fp16, the indices and table of a decompressed weight),
    whose values the steps hold already resolved. They would double the plan's memory."""
    read = set(plan.outputs)
    for step in plan.all_steps():
        read.update(_names_read(step))
    plan.constants = {name: value for name, value in plan.constants.items() if name in read}


def _zero_spatial_pad(step: Step) -> list[int] | None:
    """The [top, bottom, left, right] amounts of a ``pad`` step that adds zeros (+0.0) to the
    last two axes of a rank-4 tensor only; None for any other step (``-0.0`` too: the conv's
    own padding reads +0.0)."""
    if step.op_type != "pad" or set(step.var_kwargs) != {"x"} or step.blocks:
        return None
    if str(step.const_kwargs.get("mode", "constant")) != "constant":
        return None
    value = np.asarray(step.const_kwargs.get("constant_val", 0.0))
    if value.size != 1 or value.item() != 0 or np.signbit(value.item()):
        return None
    amounts = [int(a) for a in np.asarray(step.const_kwargs.get("pad", [])).reshape(-1)]
    # The reader is a 2-D conv, so x has rank 4: four amounts pad its last two axes.
    if len(amounts) == 4:
        return amounts
    if len(amounts) == 8 and not any(amounts[:4]):
        return amounts[4:]
    return None


def _readers(plan: Plan) -> dict[str, int]:
    """How many times each variable is read, nested blocks and program outputs included."""
    counts: dict[str, int] = {}
    for step in plan.steps:
        for name in _names_read(step):
            counts[name] = counts.get(name, 0) + 1
    for name in plan.outputs:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _fold_zero_pads(plan: Plan) -> list[Step]:
    """``plan.steps`` with each zero spatial ``pad`` whose only reader is the ``x`` of a
    ``pad_type="valid"`` 2-D conv on the same compute unit folded into that conv
    (``pad_type="custom"``): the same values, the conv's zero padding being the pad's."""
    readers = _readers(plan)
    producers = {name: step for step in plan.steps for name, _ in step.outputs}
    folded: dict[int, Step] = {}
    for step in plan.steps:
        name = step.var_kwargs.get("x")
        pad_step = producers.get(name) if isinstance(name, str) else None
        if step.op_type != "conv" or pad_step is None or readers.get(name) != 1:
            continue
        amounts = _zero_spatial_pad(pad_step)
        weight = step.const_kwargs.get("weight")
        if amounts is None or weight is None or np.ndim(weight) != 4 or "pad" in step.var_kwargs:
            continue
        if str(step.const_kwargs.get("pad_type", "valid")) != "valid" or set(step.var_kwargs) != {"x"}:
            continue
        if (pad_step.placement and pad_step.placement.unit) != (step.placement and step.placement.unit):
            continue
        folded[id(pad_step)] = None
        folded[id(step)] = replace(
            step,
            var_kwargs={"x": pad_step.var_kwargs["x"]},
            const_kwargs={**step.const_kwargs, "pad_type": "custom", "pad": np.asarray(amounts, dtype=np.int32)},
            coerce=tuple(sorted(set(step.coerce) | set(pad_step.coerce))),
        )
    return [folded.get(id(step), step) for step in plan.steps if folded.get(id(step), step) is not None]


def _fold_activations(plan: Plan, steps: list[Step]) -> list[Step]:
    """``steps`` with each float32 activation of ``FOLDS_INTO_CONV`` (relu, relu6, silu) whose
    ``x`` is a float32 conv's output that nothing else reads (and no program output is) folded
    into that conv, on the same compute unit: the conv applies it with its bias in one pass over
    its output (``activation.offset_then_activation``), and the conv's own output never exists.
    The same bits: both steps compute in float32, and the executor's cast of a float32 result is
    a no-op."""
    readers = _readers(plan)
    producers = {name: step for step in steps for name, _ in step.outputs}
    folded: dict[int, Step | None] = {}
    for step in steps:
        name = step.var_kwargs.get("x")
        conv_step = producers.get(name) if isinstance(name, str) else None
        if step.op_type not in FOLDS_INTO_CONV or conv_step is None or conv_step.op_type != "conv":
            continue
        if readers.get(name) != 1 or set(step.var_kwargs) != {"x"} or step.const_kwargs or step.blocks or step.coerce:
            continue
        if [dtype for _, dtype in conv_step.outputs + step.outputs] != [FLOAT32, FLOAT32] or id(conv_step) in folded:
            continue
        if (conv_step.placement and conv_step.placement.unit) != (step.placement and step.placement.unit):
            continue
        folded[id(step)] = None
        folded[id(conv_step)] = replace(
            conv_step, const_kwargs={**conv_step.const_kwargs, "activation": step.op_type}, outputs=list(step.outputs)
        )
    return [folded.get(id(step), step) for step in steps if folded.get(id(step), step) is not None]


def _mark_reuses(plan: Plan) -> None:
    """Set ``reuses`` on the top-level steps that may write into their input's buffer: the
    input is freed after the step anyway, so the result takes its place (an activation after a
    conv then needs no second buffer of the conv's size)."""
    for step, released in zip(plan.lean_steps, plan.releases):
        name = step.var_kwargs.get("x")
        if (
            step.op_type in WRITES_INTO_X
            and isinstance(name, str)
            and name in released
            and name not in plan.inputs
            and name not in plan.constants
        ):
            step.reuses = name


def _mark_boundaries(plan: Plan) -> None:
    """Set each Neural Engine step's ``coerce``: the arguments produced off the engine (by
    another unit or the program inputs), where NaN becomes +inf on the way in."""
    on_ane = {
        name
        for step in plan.all_steps()
        if step.placement is not None and step.placement.model.ane_datapath
        for name, _ in step.outputs
    }
    for step in plan.all_steps():
        if step.placement is None or not step.placement.model.ane_datapath:
            continue
        step.coerce = tuple(
            arg
            for arg, names in step.var_kwargs.items()
            if any(n not in on_ane and n not in plan.constants for n in (names if isinstance(names, list) else [names]))
        )


def _names_read(step: Step):
    """Every variable ``step`` reads, its nested blocks' reads included."""
    for names in step.var_kwargs.values():
        yield from names if isinstance(names, list) else [names]
    for block in step.blocks.values():
        for inner in block.steps:
            yield from _names_read(inner)
        yield from block.outputs


def _releases(plan: Plan) -> list[list[str]]:
    """For each top-level step, the values whose last reader it is (or that nothing reads).

    Freeing them as the run goes keeps the peak memory near the largest live set instead of
    the sum of every tensor, and lets the allocator reuse warm buffers.
    """
    keep = set(plan.outputs) | set(plan.constants)
    last_use: dict[str, int] = {name: -1 for name in plan.inputs}
    for index, step in enumerate(plan.lean_steps):
        for name, _ in step.outputs:
            last_use.setdefault(name, index)
        for name in _names_read(step):
            if name in last_use:
                last_use[name] = index
    releases: list[list[str]] = [[] for _ in plan.lean_steps]
    for name, index in last_use.items():
        if name not in keep and index >= 0:
            releases[index].append(name)
    return releases


def _walk(operations):
    """Every op of ``operations`` and, depth first, of their nested blocks."""
    for op in operations:
        yield op
        for block in op.blocks:
            yield from _walk(block.operations)


def _compile_operations(operations, plan: Plan, placer: Callable | None, in_control_flow: bool) -> list[Step]:
    """Steps of one block; constants (folded ones too) go to ``plan.constants``.

    MIL variable names are unique across a function's blocks, so one constant table serves
    the top level and every nested block.
    """
    from precision_sweep.emulator.executor import prepare, run_step

    steps: list[Step] = []
    for op in operations:
        if op.op_type == "const":
            plan.constants[op.outputs[0].name] = _const_value(op.outputs[0])
            plan.producers[op.outputs[0].name] = ("const", op.name)
            continue
        block_args = BLOCK_ARGUMENTS.get(op.op_type, ()) if op.blocks else ()
        const_kwargs: dict[str, Any] = {}
        var_kwargs: dict[str, str | list[str]] = {}
        for arg, value in op.inputs.items():
            if arg.startswith("_") and op.blocks:
                continue  # _cond/_body/_existing_blocks: the blocks themselves stand for them
            if isinstance(value, (list, tuple)):
                var_kwargs[arg] = [v.name for v in value]
            elif value.name in plan.constants:
                const_kwargs[arg] = plan.constants[value.name]
            else:
                var_kwargs[arg] = value.name
        if op.blocks and len(block_args) != len(op.blocks):
            raise UnsupportedOpError(
                f"MIL op {op.op_type!r} (op {op.name!r}) has {len(op.blocks)} nested blocks; the "
                "emulator only knows the blocks of " + ", ".join(sorted(BLOCK_ARGUMENTS)) + "."
            )
        step = Step(
            op_type=op.op_type,
            name=op.name,
            fn=KERNELS[op.op_type],
            const_kwargs=const_kwargs,
            var_kwargs=var_kwargs,
            outputs=[(out.name, _output_dtype(op, out, plan.constants)) for out in op.outputs],
            blocks={
                arg: Block(
                    inputs=[(v.name, var_dtype(v)) for v in block.inputs],
                    steps=_compile_operations(block.operations, plan, placer, True),
                    outputs=[v.name for v in block.outputs],
                )
                for arg, block in zip(block_args, op.blocks)
            },
        )
        for out_name, _ in step.outputs:
            plan.producers[out_name] = (op.op_type, op.name)
        if not step.blocks and _all_constant(var_kwargs, plan.constants):
            # Weight decompression and other constant subgraphs run once, at load time. Never
            # a control-flow op: its blocks may read non-constant outer variables.
            env = dict(plan.constants)
            run_step(step, env)
            for out_name, _ in step.outputs:
                plan.constants[out_name] = env[out_name]
            continue
        if placer is not None:
            step.placement = placer(op, in_control_flow)
            step.accumulator = Accumulator(step.placement.model.accumulation)
        prepare(step)
        steps.append(step)
    return steps


def _all_constant(var_kwargs, constants) -> bool:
    for names in var_kwargs.values():
        names = names if isinstance(names, list) else [names]
        if any(n not in constants for n in names):
            return False
    return True


def _refuse_unsupported(operations) -> None:
    missing = [(op.op_type, op.name) for op in operations if op.op_type not in KERNELS and op.op_type != "const"]
    if missing:
        listed = ", ".join(f"{t} (op {n!r})" for t, n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise UnsupportedOpError(
            f"The emulator has no kernel for MIL op type(s): {listed}{more}. "
            f"It cannot execute this program. Supported op types: {', '.join(supported_ops())}. "
            "Run with runtime=coreml on macOS, or add a kernel in precision_sweep/emulator/ops/."
        )
