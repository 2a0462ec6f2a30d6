"""Shared helpers of the emulator tests: Keras -> Core ML conversion and comparisons.

Keras 3 models are not recognised by ``ct.convert`` directly, so they are traced into a
``tf.function`` concrete function first (inference mode, fixed batch size).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def quiet():
    """Silence the conversion progress bars and TF logging."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        import tqdm
        from functools import partialmethod

        tqdm.tqdm.__init__ = partialmethod(tqdm.tqdm.__init__, disable=True)
    except Exception:  # pragma: no cover
        pass


def convert(model, input_shapes, precision="fp32", target=None, dtypes=None):
    """Convert a Keras model to an ML program (in memory MLModel).

    Parameters
    ----------
    model
        A Keras 3 model (called with ``training=False``).
    input_shapes
        One shape per model input, batch included.
    precision
        ``"fp32"`` or ``"fp16"`` (``compute_precision``).
    target
        ``minimum_deployment_target`` (default iOS16).
    dtypes
        One TF dtype per input (default float32).
    """
    import coremltools as ct
    import tensorflow as tf

    quiet()
    target = target or ct.target.iOS16
    dtypes = dtypes or [tf.float32] * len(input_shapes)
    names = [f"input_{i}" for i in range(len(input_shapes))]
    specs = [tf.TensorSpec(s, d, name=n) for s, d, n in zip(input_shapes, dtypes, names)]

    if len(specs) == 1:
        fn = tf.function(lambda a: model(a, training=False))
    else:
        fn = tf.function(lambda *xs: model(list(xs), training=False))
    concrete = fn.get_concrete_function(*specs)
    inputs = []
    for n, s, d in zip(names, input_shapes, dtypes):
        kw = {"dtype": np.int32} if d in (tf.int32, tf.int64) else {}
        inputs.append(ct.TensorType(name=n, shape=tuple(s), **kw))
    prec = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    return ct.convert(
        [concrete],
        source="tensorflow",
        convert_to="mlprogram",
        minimum_deployment_target=target,
        compute_precision=prec,
        inputs=inputs,
    )


def mil_program(build, inputs, opset):
    """A pymil program whose inputs are named, shaped and typed as ``inputs`` (name -> array)
    and whose body is ``build(**inputs_as_vars)`` (the builder names program inputs after
    the body's arguments, so the body is given exactly those arguments)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    names = list(inputs)
    specs = [mb.TensorSpec(v.shape, dtype=types.numpy_type_to_builtin_type(v.dtype)) for v in inputs.values()]
    namespace = {"build": build}
    exec(f"def prog({', '.join(names)}):\n    return build({', '.join(f'{n}={n}' for n in names)})", namespace)
    return mb.program(input_specs=specs, opset_version=opset)(namespace["prog"])


def keras_reference(model, feeds):
    """TF outputs (inference mode) as a list of float arrays."""
    xs = list(feeds.values())
    out = model(xs[0] if len(xs) == 1 else xs, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out]


def _output_order(name):
    # The TF frontend names the outputs Identity, Identity_1, ..., Identity_10 in TF's order,
    # and stores them sorted as strings.
    base, _, suffix = name.partition("_")
    return (base, int(suffix) if suffix.isdigit() else 0)


def emulate(mlmodel, feeds, compute_units="cpu_only"):
    """Run the emulator; outputs in the order of the Keras model's outputs."""
    from precision_sweep.emulator import Emulator

    emu = Emulator(mlmodel, compute_units=compute_units)
    outs = emu.predict(feeds)
    return [np.asarray(outs[n]) for n in sorted(emu.output_names, key=_output_order)], emu


def assert_matches_tf(got, ref, rtol=1e-4, top1=True):
    """max|got - ref| <= rtol * max|ref| and, for (N, classes) outputs, identical top-1."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    assert err <= rtol * scale, f"max abs err {err:.3g} > {rtol} * {scale:.3g}"
    if top1 and ref.ndim == 2 and ref.shape[1] > 1:
        np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(ref, axis=1))
