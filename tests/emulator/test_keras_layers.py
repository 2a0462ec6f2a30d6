"""Keras layers and activations: convert (FP32), emulate, compare with TF."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("coremltools")

import _emu_helpers as H  # noqa: E402


def _seq(shape, *layers, dtype="float32"):
    import keras

    return keras.Sequential([keras.Input(shape, dtype=dtype), *layers]), [(2, *shape)]


def _multi(layer_name, n=2, shape=(4, 3)):
    import keras

    ins = [keras.Input(shape) for _ in range(n)]
    return keras.Model(ins, getattr(keras.layers, layer_name)()(ins)), [(2, *shape)] * n


def _mha():
    import keras

    q, v = keras.Input((4, 8)), keras.Input((5, 8))
    return keras.Model([q, v], keras.layers.MultiHeadAttention(2, 4)(q, v)), [(2, 4, 8), (2, 5, 8)]


def _lambda(fn, shape=(6, 5)):
    import keras

    return _seq(shape, keras.layers.Lambda(fn))


def layer_cases():
    import keras

    L = keras.layers
    cases = {
        "Dense": lambda: _seq((7,), L.Dense(5)),
        "Dense3d": lambda: _seq((3, 7), L.Dense(5, activation="relu")),
        "Conv1D": lambda: _seq((10, 3), L.Conv1D(4, 3, padding="same")),
        "Conv1D_causal_dilated": lambda: _seq((10, 3), L.Conv1D(4, 3, padding="causal", dilation_rate=2)),
        "Conv2D_strided_same": lambda: _seq((9, 9, 3), L.Conv2D(4, 3, strides=2, padding="same")),
        "Conv2D_dilated": lambda: _seq((9, 9, 3), L.Conv2D(4, 3, dilation_rate=2)),
        "Conv3D": lambda: _seq((6, 6, 6, 2), L.Conv3D(3, 3, padding="same")),
        "Conv2DTranspose_same": lambda: _seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same")),
        "Conv2DTranspose_valid": lambda: _seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2)),
        "DepthwiseConv2D": lambda: _seq((8, 8, 3), L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")),
        "SeparableConv2D": lambda: _seq((8, 8, 3), L.SeparableConv2D(4, 3, padding="same")),
        "BatchNormalization": lambda: _seq((6, 6, 3), L.BatchNormalization(moving_mean_initializer="random_normal", moving_variance_initializer="ones")),
        "LayerNormalization": lambda: _seq((6, 4), L.LayerNormalization()),
        "GroupNormalization": lambda: _seq((6, 6, 4), L.GroupNormalization(groups=2)),
        "MaxPooling2D": lambda: _seq((8, 8, 3), L.MaxPooling2D(2)),
        "MaxPooling2D_same": lambda: _seq((7, 7, 3), L.MaxPooling2D(3, strides=2, padding="same")),
        "AveragePooling2D_same": lambda: _seq((7, 7, 3), L.AveragePooling2D(3, strides=2, padding="same")),
        "AveragePooling2D_valid": lambda: _seq((7, 7, 3), L.AveragePooling2D(2)),
        "MaxPooling1D": lambda: _seq((8, 3), L.MaxPooling1D(2)),
        "AveragePooling1D": lambda: _seq((8, 3), L.AveragePooling1D(2)),
        "GlobalAveragePooling2D": lambda: _seq((6, 6, 3), L.GlobalAveragePooling2D()),
        "GlobalMaxPooling2D": lambda: _seq((6, 6, 3), L.GlobalMaxPooling2D()),
        "GlobalAveragePooling1D": lambda: _seq((6, 3), L.GlobalAveragePooling1D()),
        "UpSampling2D_nearest": lambda: _seq((4, 4, 3), L.UpSampling2D(2)),
        "UpSampling2D_bilinear": lambda: _seq((4, 4, 3), L.UpSampling2D(2, interpolation="bilinear")),
        "Resizing_bilinear_up": lambda: _seq((6, 6, 3), L.Resizing(9, 11)),
        "Resizing_bilinear_down": lambda: _seq((9, 9, 3), L.Resizing(4, 6)),
        "Resizing_nearest": lambda: _seq((6, 6, 3), L.Resizing(9, 9, interpolation="nearest")),
        "ZeroPadding2D": lambda: _seq((5, 5, 3), L.ZeroPadding2D(((1, 2), (0, 1)))),
        "Cropping2D": lambda: _seq((6, 6, 3), L.Cropping2D(((1, 2), (0, 1)))),
        "Flatten": lambda: _seq((3, 4, 2), L.Flatten()),
        "Reshape": lambda: _seq((3, 4, 2), L.Reshape((6, 4))),
        "Permute": lambda: _seq((3, 4, 2), L.Permute((2, 1, 3))),
        "Concatenate": lambda: _multi("Concatenate"),
        "Add": lambda: _multi("Add"),
        "Multiply": lambda: _multi("Multiply"),
        "Subtract": lambda: _multi("Subtract"),
        "Average": lambda: _multi("Average", n=3),
        "Maximum": lambda: _multi("Maximum"),
        "Minimum": lambda: _multi("Minimum"),
        "Embedding": lambda: _seq((5,), L.Embedding(10, 4), dtype="int32"),
        "MultiHeadAttention": _mha,
        "LSTM_unrolled": lambda: _seq((5, 3), L.LSTM(4, unroll=True)),
        "LSTM_unrolled_sequences": lambda: _seq((5, 3), L.LSTM(4, unroll=True, return_sequences=True)),
        "GRU_unrolled": lambda: _seq((5, 3), L.GRU(4, unroll=True)),
        "SimpleRNN_unrolled": lambda: _seq((5, 3), L.SimpleRNN(4, unroll=True)),
    }
    return cases


ACTIVATIONS = [
        "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu",
        "exponential", "silu", "swish", "hard_sigmoid", "hard_silu", "leaky_relu", "relu6",
        "mish", "log_softmax", "linear",
]


def math_ops():
    """tf.math / tf ops, each a function of one (2, 6, 5) float tensor."""
    import tensorflow as tf

    return {
        "abs": tf.math.abs, "exp": tf.math.exp, "log": lambda x: tf.math.log(tf.abs(x) + 0.1),
        "sqrt": lambda x: tf.math.sqrt(tf.abs(x)), "rsqrt": lambda x: tf.math.rsqrt(tf.abs(x) + 0.1),
        "square": tf.math.square, "sin": tf.math.sin, "cos": tf.math.cos, "tan": tf.math.tan,
        "floor": tf.math.floor, "ceil": tf.math.ceil, "round": tf.math.round, "sign": tf.math.sign,
        "erf": tf.math.erf,
        "pow": lambda x: tf.math.pow(tf.abs(x), 1.5), "atan": tf.math.atan, "sinh": tf.math.sinh,
        "maximum_const": lambda x: tf.math.maximum(x, 0.3), "floordiv": lambda x: tf.math.floordiv(x, 0.7),
        "clip_by_value": lambda x: tf.clip_by_value(x, -0.5, 0.5),
        "reduce_sum": lambda x: tf.reduce_sum(x, axis=-1), "reduce_mean": lambda x: tf.reduce_mean(x, axis=1),
        "reduce_max": lambda x: tf.reduce_max(x, axis=-1), "reduce_min": lambda x: tf.reduce_min(x, axis=-1),
        "reduce_prod": lambda x: tf.reduce_prod(x, axis=-1), "reduce_logsumexp": lambda x: tf.reduce_logsumexp(x, axis=-1),
        "reduce_std": lambda x: tf.math.reduce_std(x, axis=-1),
        "argmax": lambda x: tf.cast(tf.argmax(x, axis=-1), tf.float32),
        "l2_normalize": lambda x: tf.math.l2_normalize(x, axis=-1),
        "cumsum": lambda x: tf.math.cumsum(x, axis=-1),
        "top_k": lambda x: tf.math.top_k(x, k=2).values,
        "where": lambda x: tf.where(x > 0, x, 2.0 * x),
        "einsum": lambda x: tf.einsum("bij,bkj->bik", x, x),
        "transpose_matmul": lambda x: tf.matmul(x, x, transpose_b=True),
        "tile": lambda x: tf.tile(x, [1, 2, 1]),
        "gather": lambda x: tf.gather(x, [2, 0, 1], axis=2),
        "stack_split": lambda x: tf.stack(tf.split(x, 5, axis=-1), axis=1),
        "strided_slice": lambda x: x[:, 1::2, ::-1],
        "pad_reflect": lambda x: tf.pad(x, [[0, 0], [1, 1], [2, 2]], mode="REFLECT"),
    }


CASES = layer_cases()
MATH_NAMES = sorted(math_ops())
ACTIVATION_NAMES = ACTIVATIONS + ["gelu_approximate"]


def _feeds(model, shapes, rng):
    feeds = {}
    for i, (inp, shape) in enumerate(zip(model.inputs, shapes)):
        if "int" in str(inp.dtype):
            feeds[f"input_{i}"] = rng.integers(0, 10, shape).astype(np.int32)
        else:
            feeds[f"input_{i}"] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_matches_tf(name):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model, shapes = CASES[name]()
    dtypes = [tf.int32 if "int" in str(i.dtype) else tf.float32 for i in model.inputs]
    mlmodel = H.convert(model, shapes, dtypes=dtypes)
    feeds = _feeds(model, shapes, np.random.default_rng(1))
    ref = H.keras_reference(model, feeds)
    got, emu = H.emulate(mlmodel, feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        H.assert_matches_tf(g, r, top1=False)


def test_exact_gelu_fails_to_convert():
    # Keras 3's exact gelu lowers to tf.math.erfc, which coremltools 9's TF frontend lacks.
    import keras

    model, shapes = _seq((6,), keras.layers.Activation("gelu"))
    with pytest.raises(NotImplementedError, match="Erfc"):
        H.convert(model, shapes)


def test_grouped_conv2d_fails_to_convert():
    # Keras 3 compiles grouped Conv2D with XLA (jit_compile): the traced graph holds a
    # StatefulPartitionedCall with _XlaMustCompile, which coremltools' TF frontend rejects.
    import keras

    model, shapes = _seq((7, 7, 4), keras.layers.Conv2D(6, 3, groups=2, padding="same"))
    with pytest.raises(NotImplementedError, match="StatefulPartitionedCall"):
        H.convert(model, shapes)


def test_reciprocal_follows_mil_inverse_epsilon():
    # tf.math.reciprocal converts to MIL inverse(x, epsilon=1e-4): y = 1 / (x + 1e-4).
    # The emulator follows the MIL spec, so it matches that, not TF's exact 1 / x.
    import tensorflow as tf

    model, shapes = _lambda(lambda x: tf.math.reciprocal(x))
    mlmodel = H.convert(model, shapes)
    x = np.abs(np.random.default_rng(2).standard_normal(shapes[0])).astype(np.float32) + 0.5
    (got,), _ = H.emulate(mlmodel, {"input_0": x})
    np.testing.assert_allclose(got, 1.0 / (x + np.float32(1e-4)), rtol=1e-6)


def _grouped(branches, shape):
    """One multi-output model (one conversion) whose outputs are ``branches`` of one input."""
    import keras

    inp = keras.Input(shape)
    model = keras.Model(inp, [keras.layers.Lambda(fn, name=name)(inp) for name, fn in branches])
    shapes = [(2, *shape)]
    mlmodel = H.convert(model, shapes)
    feeds = {"input_0": np.random.default_rng(1).standard_normal(shapes[0]).astype(np.float32)}
    ref = H.keras_reference(model, feeds)
    got, _ = H.emulate(mlmodel, feeds)
    assert len(got) == len(ref) == len(branches)
    return {name: (g, r) for (name, _), g, r in zip(branches, got, ref)}


@pytest.fixture(scope="module")
def activation_outputs():
    import keras

    branches = [(a, (lambda a: lambda x: keras.activations.get(a)(x))(a)) for a in ACTIVATIONS]
    branches.append(("gelu_approximate", lambda x: keras.activations.gelu(x, approximate=True)))
    return _grouped(branches, (6,))


@pytest.fixture(scope="module")
def math_outputs():
    return _grouped(sorted(math_ops().items()), (6, 5))


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_matches_tf(name, activation_outputs):
    got, ref = activation_outputs[name]
    H.assert_matches_tf(got, ref, top1=False)


@pytest.mark.parametrize("name", MATH_NAMES)
def test_tf_math_op_matches_tf(name, math_outputs):
    got, ref = math_outputs[name]
    H.assert_matches_tf(got, ref, top1=False)
