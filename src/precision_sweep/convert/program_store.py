"""Store the TF frontend's MIL program on disk in coremltools' own serialized form.

An entry is a directory:

* ``program.milproto``: the program as a ``MIL_pb2.Program`` message, written by coremltools'
  ``MILProtoExporter`` (the exporter behind every ``.mlpackage``);
* ``weights/weight.bin``: its blob file of large constants;
* ``io.json``: the main function's declared input and output types (names, flexible-batch
  bounds, I/O dtypes), which the program message does not carry but ``ct.convert`` reads.

Loading parses protobuf, reads the blob with coremltools' ``BlobReader`` and reads JSON, then
rebuilds the program with coremltools' milproto loader, which constructs every op through its
class (so each op class is initialised in this process, exactly as the frontend would).
Nothing in an entry is executed, so a cache directory that others can write cannot make a
job run their code (it can only hand it a wrong program, as it could a wrong ``.mlpackage``).

A program converted from a loaded entry equals, proto for proto, the one converted from the
frontend's program (tested). Two kinds of program are not stored, and raise
:class:`ProgramNotStorable` so the caller keeps them in memory only:

* programs with nested blocks (``while_loop``, ``cond``) or list values: milproto keeps no
  list ``dynamic_length``/``init_length``, so a recurrent program read back would convert to a
  program that declares other list lengths than a plain ``ct.convert`` gives;
* programs the exporter refuses, or whose read-back differs from the original in any op, name,
  dtype or shape (checked at every save).
"""

from __future__ import annotations

import json
from pathlib import Path

_PROGRAM = "program.milproto"
_WEIGHTS = "weights"
_IO = "io.json"


class ProgramNotStorable(Exception):
    """The exporter cannot serialize this program (it stays in memory only)."""


def _dim_to_json(dim):
    from coremltools.converters.mil.input_types import RangeDim

    if isinstance(dim, RangeDim):
        return {"lower_bound": int(dim.lower_bound), "upper_bound": int(dim.upper_bound), "default": int(dim.default)}
    return int(dim)


def _io_types_to_json(function) -> dict:
    from coremltools.converters.mil.input_types import TensorType
    from coremltools.converters.mil.mil import types

    inputs = []
    for spec in function.input_types or ():
        if type(spec) is not TensorType or getattr(spec, "default_value", None) is not None:
            raise ProgramNotStorable(f"input type {spec!r} is not a plain TensorType")
        shape = None if spec.shape is None else [_dim_to_json(d) for d in spec.shape.shape]
        dtype = None if spec.dtype is None else types.builtin_to_string(spec.dtype)
        inputs.append({"name": spec.name, "shape": shape, "dtype": dtype})
    outputs = None
    if function.output_types is not None:
        outputs = []
        for spec in function.output_types:
            if type(spec) is not TensorType or spec.shape is not None:
                raise ProgramNotStorable(f"output type {spec!r} is not a plain TensorType")
            dtype = None if spec.dtype is None else types.builtin_to_string(spec.dtype)
            outputs.append({"name": spec.name, "dtype": dtype})
    return {"inputs": inputs, "outputs": outputs}


def _io_types_from_json(function, record: dict) -> None:
    """Set ``function.input_types``/``output_types`` from ``record``; a flexible dimension
    takes the symbol of the loaded placeholder, so the types and the program agree."""
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    def dtype(name):
        return None if name is None else types.string_to_builtin(name)

    inputs = []
    for spec in record["inputs"]:
        shape = None
        if spec["shape"] is not None:
            placeholder = function.inputs[spec["name"]].shape
            shape = []
            for i, dim in enumerate(spec["shape"]):
                if isinstance(dim, dict):
                    dim = ct.RangeDim(dim["lower_bound"], dim["upper_bound"], dim["default"])
                    dim.symbol = placeholder[i]
                shape.append(dim)
        inputs.append(ct.TensorType(name=spec["name"], shape=shape, dtype=dtype(spec["dtype"])))
    function.input_types = inputs
    if record["outputs"] is not None:
        function.output_types = [ct.TensorType(name=spec["name"], dtype=dtype(spec["dtype"])) for spec in record["outputs"]]


def _signature(program) -> list:
    """Ops, names, dtypes and shapes of the main block (symbolic dims as "?")."""
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    def dtype(var):
        return types.builtin_to_string(var.dtype)

    def shape(var):
        return tuple("?" if is_symbolic(d) else int(d) for d in var.shape) if var.shape is not None else None

    function = program.functions["main"]
    rows = [("input", name, dtype(var), shape(var)) for name, var in function.inputs.items()]
    for op in function.operations:
        rows.append((op.op_type, op.name, tuple((v.name, dtype(v), shape(v)) for v in op.outputs)))
    rows.append(("outputs", tuple(v.name for v in function.outputs)))
    return rows


def _check_storable(program) -> None:
    from coremltools.converters.mil.mil import types

    if list(program.functions) != ["main"]:
        raise ProgramNotStorable(f"functions {list(program.functions)}: only a single 'main' is stored")
    for op in program.functions["main"].operations:
        if op.blocks:
            raise ProgramNotStorable(f"{op.op_type} {op.name!r} has nested blocks (control flow)")
        if any(types.is_list(v.sym_type) for v in op.outputs):
            raise ProgramNotStorable(f"{op.op_type} {op.name!r} makes a list, whose length milproto does not keep")


def save_program(program, directory: Path) -> None:
    """Write ``program`` (a single-function pymil program) into the empty ``directory``.

    Raises
    ------
    ProgramNotStorable
        When the exporter cannot serialize the program.
    """
    import copy

    from coremltools.converters.mil.backend.mil.load import MILProtoExporter

    _check_storable(program)
    function = program.functions["main"]
    io_types = _io_types_to_json(function)
    spec_version = int(function.opset_version.value)
    directory = Path(directory)
    weights = directory / _WEIGHTS
    weights.mkdir(parents=True, exist_ok=True)
    try:
        # The exporter validates and may annotate the program: give it a copy.
        message = MILProtoExporter(copy.deepcopy(program), str(weights), spec_version).export()
    except Exception as exc:  # noqa: BLE001 - any exporter failure means "keep it in memory"
        raise ProgramNotStorable(f"{type(exc).__name__}: {exc}") from exc
    (directory / _PROGRAM).write_bytes(message.SerializeToString())
    (directory / _IO).write_text(json.dumps({"spec_version": spec_version, **io_types}, indent=1))
    if _signature(load_program(directory)) != _signature(program):
        raise ProgramNotStorable("the program read back differs from the original")


def load_program(directory: Path):
    """The program stored in ``directory`` by :func:`save_program` (runs no stored code)."""
    from coremltools import proto
    from coremltools.converters.mil.frontend.milproto.load import load_mil_proto

    directory = Path(directory)
    record = json.loads((directory / _IO).read_text())
    message = proto.MIL_pb2.Program()
    message.ParseFromString((directory / _PROGRAM).read_bytes())
    program = load_mil_proto(message, int(record["spec_version"]), str(directory / _WEIGHTS))
    _io_types_from_json(program.functions["main"], record)
    return program
