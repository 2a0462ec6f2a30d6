"""Kernels against coremltools' own value inference.

Ops without value inference (or with a buggy one, e.g. ``concat(interleave=True)`` and
``cumsum(exclusive=True)``) are checked in closed form in ``test_kernels_closed_form.py``.

Each case builds a one-op MIL program with ``coremltools.converters.mil.Builder`` whose inputs
are all constants. coremltools computes the op's value with the op definition's
``value_inference`` (or ``materialized_val_inference`` for ``constexpr_*``/``dequantize``);
the emulator computes it by running the kernel when it compiles the plan (constant folding).
"""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from precision_sweep.emulator.program import compile_plan, numpy_dtype  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)
POS = (np.abs(X) + 0.1).astype(np.float32)
I8 = RNG.integers(-128, 128, (4, 6)).astype(np.int8)


def _packed_mask(count, rng):
    bits = (rng.random(count) < 0.5).astype(np.uint8)
    return np.packbits(bits, bitorder="little"), int(bits.sum())


MASK16, NNZ16 = _packed_mask(15, np.random.default_rng(1))
MASK18 = (np.random.default_rng(2).random((4, 6)) < 0.5).astype(types.np_uint1_dtype)
NNZ18 = int(MASK18.sum())

IOS15, IOS16, IOS17, IOS18 = ct.target.iOS15, ct.target.iOS16, ct.target.iOS17, ct.target.iOS18

CASES = {
    # elementwise
    "add": (IOS15, lambda: mb.add(x=X, y=X[0])),
    "floor_div": (IOS15, lambda: mb.floor_div(x=X, y=np.float32(0.7))),
    "mod": (IOS15, lambda: mb.mod(x=X, y=np.float32(0.7))),
    "pow": (IOS15, lambda: mb.pow(x=POS, y=np.float32(1.5))),
    "real_div": (IOS15, lambda: mb.real_div(x=X, y=POS)),
    "greater": (IOS15, lambda: mb.greater(x=X, y=np.float32(0.0))),
    "sqrt": (IOS15, lambda: mb.sqrt(x=POS)),
    "rsqrt": (IOS15, lambda: mb.rsqrt(x=POS, epsilon=1e-3)),
    "inverse": (IOS15, lambda: mb.inverse(x=POS)),
    "log": (IOS15, lambda: mb.log(x=POS)),
    "exp2": (IOS15, lambda: mb.exp2(x=X)),
    "round": (IOS15, lambda: mb.round(x=X * 3)),
    "clip": (IOS15, lambda: mb.clip(x=X, alpha=np.float32(-0.5), beta=np.float32(0.5))),
    "cast_fp16": (IOS15, lambda: mb.cast(x=X, dtype="fp16")),
    "cast_int32": (IOS15, lambda: mb.cast(x=X * 4, dtype="int32")),
    "cast_bool_fp32": (IOS15, lambda: mb.cast(x=X > 0, dtype="fp32")),
    # reductions
    "reduce_sum": (IOS15, lambda: mb.reduce_sum(x=X, axes=[1, 2], keep_dims=True)),
    "reduce_mean": (IOS15, lambda: mb.reduce_mean(x=X, axes=[-1])),
    "reduce_max": (IOS15, lambda: mb.reduce_max(x=X, axes=[0])),
    "reduce_prod": (IOS15, lambda: mb.reduce_prod(x=X, axes=[2])),
    "reduce_argmax": (IOS15, lambda: mb.reduce_argmax(x=X, axis=1)),
    "reduce_argmin": (IOS15, lambda: mb.reduce_argmin(x=X, axis=-1, keep_dims=True)),
    "reduce_l2_norm": (IOS15, lambda: mb.reduce_l2_norm(x=X, axes=[1])),
    "reduce_log_sum_exp": (IOS15, lambda: mb.reduce_log_sum_exp(x=X, axes=[2])),
    # tensor operation
    "concat": (IOS15, lambda: mb.concat(values=[X, X], axis=1)),
    "stack": (IOS15, lambda: mb.stack(values=[X, X], axis=2)),
    "split": (IOS15, lambda: mb.split(x=X, split_sizes=[1, 3], axis=2)),
    "tile": (IOS15, lambda: mb.tile(x=X, reps=[1, 2, 1])),
    "pad_constant": (IOS15, lambda: mb.pad(x=X, pad=[1, 0, 2, 1], constant_val=np.float32(3.0))),
    "pad_reflect": (IOS15, lambda: mb.pad(x=X, pad=[1, 1], mode="reflect")),
    "pad_replicate": (IOS15, lambda: mb.pad(x=X, pad=[0, 1, 2, 0], mode="replicate")),
    "fill": (IOS15, lambda: mb.fill(shape=np.array([2, 3], np.int32), value=np.float32(1.5))),
    "range_1d": (IOS15, lambda: mb.range_1d(start=np.float32(0.5), end=np.float32(4.0), step=np.float32(0.75))),
    "cumsum_reverse": (IOS15, lambda: mb.cumsum(x=X, axis=1, reverse=True)),
    "topk": (IOS15, lambda: mb.topk(x=X, k=2, axis=-1)),
    "argsort": (IOS15, lambda: mb.argsort(x=X, axis=-1, ascending=True)),
    "select": (IOS15, lambda: mb.select(cond=X > 0, a=X, b=np.float32(0.0))),
    # tensor transformation
    "reshape": (IOS15, lambda: mb.reshape(x=X, shape=[4, -1])),
    "transpose": (IOS15, lambda: mb.transpose(x=X, perm=[2, 0, 1])),
    "squeeze": (IOS15, lambda: mb.squeeze(x=X[:1], axes=[0])),
    "expand_dims": (IOS15, lambda: mb.expand_dims(x=X, axes=[0, -1])),
    "slice_by_index": (IOS15, lambda: mb.slice_by_index(x=X, begin=[0, 1, 3], end=[2, 3, 0], stride=[1, 1, -2], end_mask=[False, False, True])),
    "slice_by_index_squeeze": (IOS15, lambda: mb.slice_by_index(x=X, begin=[1, 0, 0], end=[2, 3, 4], squeeze_mask=[True, False, False])),
    "slice_by_size": (IOS15, lambda: mb.slice_by_size(x=X, begin=[0, 1, 1], size=[-1, 2, 2])),
    "reverse": (IOS15, lambda: mb.reverse(x=X, axes=[1, 2])),
    "slice_update": (IOS18, lambda: mb.slice_update(x=X, update=np.ones((2, 1, 2), np.float32), begin=np.array([0, 1, 0], np.int32), end=np.array([2, 2, 4], np.int32), stride=np.array([1, 1, 2], np.int32))),
    # scatter / gather
    "gather": (IOS16, lambda: mb.gather(x=X, indices=np.array([[2, 0], [1, 1]], np.int32), axis=1)),
    "gather_batch_dims": (IOS16, lambda: mb.gather(x=X, indices=np.array([[3, 0, 1], [2, 2, 0]], np.int32), axis=2, batch_dims=1)),
    "gather_along_axis": (IOS15, lambda: mb.gather_along_axis(x=X, indices=np.array([[[0, 2, 1, 0]], [[2, 2, 0, 1]]], np.int32), axis=1)),
    "scatter_along_axis": (IOS15, lambda: mb.scatter_along_axis(data=X, indices=np.array([[[0, 2, 1, 0]], [[2, 2, 0, 1]]], np.int32), updates=np.ones((2, 1, 4), np.float32), axis=1, mode="update")),
    # transformers
    "scaled_dot_product_attention": (IOS18, lambda: mb.scaled_dot_product_attention(query=X[:, :, None, :] * np.ones((1, 1, 3, 1), np.float32), key=RNG.standard_normal((2, 3, 5, 4)).astype(np.float32), value=RNG.standard_normal((2, 3, 5, 2)).astype(np.float32))),
    "scaled_dot_product_attention_bool_mask": (IOS18, lambda: mb.scaled_dot_product_attention(query=RNG.standard_normal((2, 3, 4)).astype(np.float32), key=RNG.standard_normal((2, 5, 4)).astype(np.float32), value=RNG.standard_normal((2, 5, 2)).astype(np.float32), attn_mask=np.tril(np.ones((3, 5), bool)))),
    "scaled_dot_product_attention_float_mask": (IOS18, lambda: mb.scaled_dot_product_attention(query=RNG.standard_normal((2, 3, 4)).astype(np.float32), key=RNG.standard_normal((2, 5, 4)).astype(np.float32), value=RNG.standard_normal((2, 5, 2)).astype(np.float32), attn_mask=RNG.standard_normal((3, 5)).astype(np.float32))),
    # quantization and compression
    "quantize_int8": (IOS17, lambda: mb.quantize(input=X, scale=np.float32(0.02), zero_point=np.int8(3), output_dtype="int8")),
    "quantize_uint8_axis": (IOS17, lambda: mb.quantize(input=X, scale=np.array([0.01, 0.02, 0.03], np.float32), zero_point=np.array([120, 128, 130], np.uint8), axis=1, output_dtype="uint8")),
    "dequantize": (IOS17, lambda: mb.dequantize(input=I8, scale=np.linspace(0.1, 0.6, 6).astype(np.float32), zero_point=np.arange(6).astype(np.int8), axis=1)),
    "constexpr_affine_dequantize": (IOS16, lambda: mb.constexpr_affine_dequantize(quantized_data=I8, zero_point=np.arange(4).astype(np.int8), scale=np.linspace(0.1, 0.4, 4).astype(np.float16), axis=0)),
    "constexpr_cast": (IOS16, lambda: mb.constexpr_cast(source_val=X.astype(np.float16), output_dtype="fp32")),
    "constexpr_lut_to_dense_ios16": (IOS16, lambda: mb.constexpr_lut_to_dense(indices=np.array([0b11100100, 0b01001110, 0b10110001, 0b00111001], np.uint8), lut=np.array([-1.0, 0.5, 2.0, 4.0], np.float32), shape=np.array([3, 5], np.uint32))),
    "constexpr_lut_to_dense_ios16_6bit": (IOS16, lambda: mb.constexpr_lut_to_dense(indices=RNG.integers(0, 256, 6).astype(np.uint8), lut=np.linspace(-1, 1, 64).astype(np.float16), shape=np.array([8], np.uint32))),
    "constexpr_sparse_to_dense_ios16": (IOS16, lambda: mb.constexpr_sparse_to_dense(nonzero_data=np.arange(1, NNZ16 + 1).astype(np.float32), mask=MASK16, shape=np.array([3, 5], np.uint32))),
    "constexpr_blockwise_shift_scale": (IOS18, lambda: mb.constexpr_blockwise_shift_scale(data=RNG.integers(-8, 8, (4, 6)).astype(types.np_int4_dtype), scale=np.array([[0.5, 0.25], [1.0, 2.0]], np.float16), offset=np.array([[1, -2], [0, 3]]).astype(types.np_int4_dtype))),
    "constexpr_blockwise_shift_scale_fp_offset": (IOS18, lambda: mb.constexpr_blockwise_shift_scale(data=RNG.integers(0, 256, (4, 6)).astype(np.uint8), scale=np.array([[0.5], [0.25], [1.0], [2.0]], np.float32), offset=np.array([[1.5], [-2.0], [0.25], [3.0]], np.float32))),
    "constexpr_lut_to_dense_ios18_grouped": (IOS18, lambda: mb.constexpr_lut_to_dense(indices=RNG.integers(0, 4, (6, 2)).astype(types.np_uint2_dtype), lut=np.array([1.0, 5.0, 9.0, 13.0, 2.0, 10.0, 18.0, 26.0], np.float16).reshape(2, 1, 4, 1))),
    "constexpr_lut_to_dense_ios18_vector": (IOS18, lambda: mb.constexpr_lut_to_dense(indices=RNG.integers(0, 2, (2, 2, 2)).astype(types.np_uint1_dtype), lut=np.arange(6).astype(np.int8).reshape(1, 1, 1, 2, 3), vector_axis=np.int32(1))),
    "constexpr_lut_to_dense_ios18_vector_last": (IOS18, lambda: mb.constexpr_lut_to_dense(indices=RNG.integers(0, 4, (4, 2, 3)).astype(types.np_uint2_dtype), lut=RNG.standard_normal((2, 1, 1, 4, 2)).astype(np.float32), vector_axis=np.int32(-1))),
    "constexpr_sparse_to_dense_ios18": (IOS18, lambda: mb.constexpr_sparse_to_dense(nonzero_data=np.arange(1, NNZ18 + 1).astype(np.float16), mask=MASK18)),
    "constexpr_lut_to_sparse": (IOS18, lambda: mb.constexpr_lut_to_sparse(indices_mask=MASK18, indices_nonzero_data=RNG.integers(0, 4, NNZ18).astype(types.np_uint2_dtype), lut=RNG.standard_normal((2, 1, 4, 1)).astype(np.float16))),
    "constexpr_lut_to_sparse_vector": (IOS18, lambda: mb.constexpr_lut_to_sparse(indices_mask=MASK18, indices_nonzero_data=RNG.integers(0, 2, NNZ18).astype(types.np_uint1_dtype), lut=RNG.standard_normal((1, 1, 2, 2)).astype(np.float32), vector_axis=np.int32(0))),
    "constexpr_sparse_blockwise_shift_scale": (IOS18, lambda: mb.constexpr_sparse_blockwise_shift_scale(data_mask=MASK18, nonzero_data=RNG.integers(-8, 8, NNZ18).astype(types.np_int4_dtype), scale=np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float16), offset=np.array([[1, 2, 3, 4, 5, 6]]).astype(types.np_int4_dtype))),
}


def _reference(op):
    values = op.value_inference() if op.outputs[0].val is not None else None
    if values is None:
        values = op.materialized_val_inference()
    return values if isinstance(values, tuple) else (values,)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_equals_value_inference(name):
    opset, build = CASES[name]
    holder = {}

    @mb.program(input_specs=[mb.TensorSpec((1,))], opset_version=opset)
    def prog(a):
        out = build()
        outs = out if isinstance(out, (list, tuple)) else [out]
        holder["op"] = outs[0].op
        return (*outs, a)

    op = holder["op"]
    plan = compile_plan(prog)
    assert not any(step.name == op.name for step in plan.steps), "constant op was not folded"
    for var, want in zip(op.outputs, _reference(op)):
        got = plan.constants[var.name]
        want = np.asarray(want).astype(numpy_dtype(var.dtype))
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.shape == want.shape, (got.shape, want.shape)
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, want)
