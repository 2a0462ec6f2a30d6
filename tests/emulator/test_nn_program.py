"""The NeuralNetwork loader (emulator/nn_program.py): real Keras models converted with
``convert_to="neuralnetwork"`` at iOS13/iOS14, executed by the same executor as ML programs,
against TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest


def _zoo():
    """A CNN touching the NN layer types coremltools' NN backend emits for common Keras layers."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    d = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    d = keras.layers.LeakyReLU(0.1)(d)
    x = keras.layers.Add()([x, d])
    x = keras.layers.Concatenate()([keras.layers.MaxPooling2D(2)(x), keras.layers.AveragePooling2D(2)(x)])
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="sigmoid")(x)
    u = keras.layers.UpSampling2D(2)(x)
    u = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="tanh")(u)
    h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(u), keras.layers.GlobalMaxPooling2D()(x)])
    h = keras.layers.Dense(16, activation="relu")(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Multiply()([h, keras.layers.Dense(16, activation="swish")(h)])
    outputs = keras.layers.Dense(5, activation="softmax")(h)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import coremltools as ct

    root = tmp_path_factory.mktemp("nn")
    model = _zoo()
    paths = {}
    for target in ("iOS13", "iOS14"):
        mlmodel = ct.convert(model, inputs=[ct.TensorType(name="image", shape=(ct.RangeDim(1, 64, 1), 16, 16, 3))],
                             minimum_deployment_target=getattr(ct.target, target), convert_to="neuralnetwork")
        paths[target] = root / f"zoo_{target}.mlmodel"
        mlmodel.save(str(paths[target]))
    x = np.random.default_rng(0).random((16, 16, 16, 3)).astype(np.float32)
    return model, paths, x, model.predict(x, verbose=0)


@pytest.mark.parametrize("target", ["iOS13", "iOS14"])
def test_fp32_cpu_only_matches_tensorflow(zoo, target):
    import coremltools as ct

    from precision_sweep.emulator import Emulator

    model, paths, x, expected = zoo
    spec = ct.utils.load_spec(str(paths[target]))
    # coremltools writes the lowest version the layers need, at most the target's
    assert spec.WhichOneof("Type") == "neuralNetwork" and 4 <= spec.specificationVersion <= {"iOS13": 4, "iOS14": 5}[target]
    layer_types = {layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}
    assert {"convolution", "batchedMatmul", "pooling", "padding", "concatND", "reduceMean", "unary"} <= layer_types
    emulator = Emulator(paths[target], "cpu_only")
    out = emulator.predict({"image": x})[emulator.output_names[0]]
    assert np.abs(out - expected).max() <= 1e-5
    assert emulator.spec_version == spec.specificationVersion
    assert {s["unit"] for s in emulator.placements()} == {"cpu"}


def test_gpu_and_neural_engine_compute_in_fp16(zoo):
    """Typed execution: the same fp32-weight file computes in fp16 off the CPU."""
    from precision_sweep.emulator import Emulator

    _, paths, x, expected = zoo
    fp32 = Emulator(paths["iOS13"], "cpu_only").predict({"image": x})
    for units in ("cpu_and_gpu", "all"):
        emulator = Emulator(paths["iOS13"], units)
        out = emulator.predict({"image": x})[emulator.output_names[0]]
        diff = np.abs(out - expected).max()
        assert 1e-5 < diff < 1e-2, (units, diff)  # fp16 arithmetic: not fp32, not wrong
        assert (out.argmax(1) == expected.argmax(1)).mean() == 1.0
        assert not np.array_equal(out, fp32[emulator.output_names[0]])
    units = {s["unit"] for s in Emulator(paths["iOS13"], "all").placements()}
    assert "ane" in units


def test_image_classifier_reads_scaler_and_class_labels(tmp_path):
    """The standard example at iOS13: ImageType + ClassifierConfig, a neuralNetworkClassifier whose
    spec carries the preprocessing; fed 8-bit pixels, its classLabel is TF's prediction."""
    import coremltools as ct
    import keras

    import app_models
    from precision_sweep.data.preprocessing import ImageFeed
    from precision_sweep.diagnose.preprocessing import file_preprocessing
    from precision_sweep.emulator import Emulator

    core = app_models.train_core()
    mlmodel = ct.convert(core, inputs=[ct.ImageType(name="image", shape=(1, 8, 8, 3), scale=2 / 255, bias=[-1, -1, -1],
                                                    color_layout=ct.colorlayout.BGR)],
                         classifier_config=ct.ClassifierConfig(app_models.CLASS_NAMES),
                         minimum_deployment_target=ct.target.iOS13, convert_to="neuralnetwork")
    path = tmp_path / "classifier.mlmodel"
    mlmodel.save(str(path))
    spec = ct.utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier" and spec.specificationVersion == 4
    assert spec.neuralNetworkClassifier.preprocessing[0].scaler.blueBias == -1

    pixels, _ = app_models.rgb_digits()
    pixels = pixels[:40]
    bgr_model_input = pixels[..., ::-1].astype(np.float32) / 127.5 - 1  # what the file computes
    expected = core.predict(bgr_model_input, verbose=0)
    emulator = Emulator(path, "cpu_only")
    label, probabilities, classes = emulator.classifier()
    assert (label, classes) == ("classLabel", app_models.CLASS_NAMES)
    feed = ImageFeed("BGR")(pixels)
    outputs = [emulator.predict({"image": feed[i:i + 1]}) for i in range(len(feed))]
    labels = np.concatenate([o[label] for o in outputs])
    scores = np.concatenate([o[probabilities] for o in outputs])
    assert np.abs(scores - expected).max() <= 1e-5
    assert labels.tolist() == [app_models.CLASS_NAMES[i] for i in expected.argmax(1)]
    read = file_preprocessing(emulator, "BGR")
    assert read.describe() == "[-1, 1] BGR"
    assert file_preprocessing(Emulator(path, "all"), "BGR").describe() == "[-1, 1] BGR"


@pytest.mark.parametrize("nbits, mode, storage", [(16, "linear", "float16Value"), (8, "linear", "linear"),
                                                  (4, "linear_lut", "lookupTable")])
def test_quantized_weights_are_read_back(zoo, tmp_path, nbits, mode, storage):
    """quantization_utils.quantize_weights' files: fp16 weights, linear 8-bit, a 4-bit LUT (k-means LUTs
    fail inside coremltools 9 with this scikit-learn: its LUT is written as arrays)."""
    import coremltools as ct
    from coremltools.models.neural_network import quantization_utils

    from precision_sweep.emulator import Emulator

    _, paths, x, expected = zoo
    quantized = quantization_utils.quantize_weights(ct.models.MLModel(str(paths["iOS13"])), nbits=nbits,
                                                    quantization_mode=mode)
    path = tmp_path / "q.mlmodel"
    quantized.save(str(path))
    spec = ct.utils.load_spec(str(path))
    conv = next(layer.convolution for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") == "convolution")
    if storage == "float16Value":
        assert len(conv.weights.float16Value) and not len(conv.weights.floatValue)
    else:
        assert conv.weights.quantization.numberOfBits == nbits
        assert conv.weights.quantization.WhichOneof("QuantizationType") == f"{storage}Quantization"
        # the codes read back as coremltools' own dequantization reads them, bit for bit
        from coremltools.models.neural_network.quantization_utils import _dequantize_wp

        from precision_sweep.emulator.nn_program import weight_values

        shape = (conv.outputChannels, conv.kernelChannels, *conv.kernelSize)
        reference = type(conv.weights)()
        reference.CopyFrom(conv.weights)
        _dequantize_wp(reference, shape, axis=0)
        np.testing.assert_array_equal(weight_values(conv.weights, shape),
                                      np.asarray(reference.floatValue, dtype=np.float32).reshape(shape))
    fp32 = Emulator(paths["iOS13"], "cpu_only").predict({"image": x})
    emulator = Emulator(path, "cpu_only")
    out = emulator.predict({"image": x})[emulator.output_names[0]]
    assert not np.array_equal(out, fp32[emulator.output_names[0]])  # the weights really changed
    assert np.abs(out - expected).max() < 0.1
    assert (out.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_a_layer_without_an_adapter_is_refused_at_load_with_its_name(tmp_path):
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from precision_sweep.emulator import Emulator
    from precision_sweep.emulator.nn_program import UnsupportedLayerError

    builder = NeuralNetworkBuilder([("x", datatypes.Array(3, 4, 4))], [("y", None)], disable_rank5_shape_mapping=True)
    builder.add_elementwise("my_dot", ["x", "x"], "y", mode="DOT")
    path = tmp_path / "dot.mlmodel"
    ct.utils.save_spec(builder.spec, str(path))
    with pytest.raises(UnsupportedLayerError, match=r"'my_dot' \(dot\)") as info:
        Emulator(path, "cpu_only")
    assert "Supported layer types:" in str(info.value) and "convolution" in str(info.value)


# -- layer families beyond the CNN zoo: each a real TF graph converted to a NeuralNetwork, run by
# the emulator (cpu_only, fp32) against TensorFlow


def _tf_graph_case(tmp_path, fn, specs, feeds, name):
    """Convert a ``tf.function`` (its inputs ``feeds``, name -> array, with ``specs`` (shape,
    dtype) in the same order) to a NeuralNetwork ``.mlmodel``; return (layer types, emulator
    outputs in order, TF outputs in order)."""
    import coremltools as ct
    import tensorflow as tf

    from precision_sweep.emulator import Emulator

    names = list(feeds)
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(s, d, name=n) for n, (s, d) in zip(names, specs)])
    concrete = concrete.get_concrete_function()
    mlmodel = ct.convert([concrete], source="tensorflow", convert_to="neuralnetwork",
                         minimum_deployment_target=ct.target.iOS14)
    path = tmp_path / f"{name}.mlmodel"
    mlmodel.save(str(path))
    spec = ct.utils.load_spec(str(path))
    types = set()
    stack = list(spec.neuralNetwork.layers)
    while stack:
        lay = stack.pop()
        types.add(lay.WhichOneof("layer"))
        if lay.WhichOneof("layer") == "loop":
            stack += list(lay.loop.conditionNetwork.layers) + list(lay.loop.bodyNetwork.layers)
        if lay.WhichOneof("layer") == "branch":
            stack += list(lay.branch.ifBranch.layers) + list(lay.branch.elseBranch.layers)
    emulator = Emulator(path, "cpu_only")
    assert {i.name for i in spec.description.input} == set(names)
    out = emulator.predict({n: v.astype(np.float32) for n, v in feeds.items()})
    expected = fn(*[tf.constant(v) for v in feeds.values()])
    expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
    # TF names a function's outputs Identity, Identity_1, ...; the spec need not list them in order
    order = sorted(out, key=lambda n: int(n.rpartition("_")[2]) if n.rpartition("_")[2].isdigit() else 0)
    assert len(order) == len(expected)
    return types, [out[n] for n in order], expected


def test_indexing_sorting_and_comparison_layers(tmp_path):
    """gather, topK, argMax, argSort, oneHot, cumSum, reverse, the comparisons and logical layers
    (float 0/1 blobs), whereBroadcastable, scatterND, gatherND."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    indices = np.array([2, 0, 1], np.int32)

    def fn(x, idx):
        values, positions = tf.math.top_k(x, k=3)
        picked = tf.gather(x, idx, axis=0)
        hot = tf.one_hot(idx, 5, on_value=2.0, off_value=-1.0)
        mask = tf.logical_and(x > 0.1, tf.logical_not(x > 1.0))
        masked = tf.where(mask, x, tf.zeros_like(x))
        order = tf.cast(tf.argsort(x, axis=1, direction="DESCENDING"), tf.float32)
        largest = tf.cast(tf.argmax(x, axis=1), tf.float32)
        running = tf.math.cumsum(tf.reverse(x, axis=[1]), axis=1, exclusive=True)
        nd = tf.gather_nd(x, tf.stack([idx, idx], axis=1))
        scattered = tf.tensor_scatter_nd_add(x, tf.reshape(idx, (3, 1)), picked)
        return (values, tf.cast(positions, tf.float32), picked, hot, masked, order, largest, running, nd, scattered,
                tf.cast(tf.equal(x, picked), tf.float32))

    types, out, expected = _tf_graph_case(tmp_path, fn, [((3, 8), tf.float32), ((3,), tf.int32)],
                                          {"x": x, "idx": indices}, "indexing")
    assert {"topK", "gather", "oneHot", "argMax", "cumSum", "reverse", "whereBroadcastable", "gatherND",
            "scatterND"} <= types, types
    assert types & {"greaterThan", "logicalAnd", "logicalNot", "equal"}, types
    for got, want in zip(out, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want.astype(np.float32), atol=1e-5, rtol=0)


def test_three_d_convolution_and_pooling_layers(tmp_path):
    """convolution3d (strided, same and valid padding), pooling3d (max and average) and a 3-D
    deconvolution, from Keras layers."""
    import coremltools as ct
    import keras

    from precision_sweep.emulator import Emulator

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 8, 8, 2))
    x = keras.layers.Conv3D(4, 3, strides=(1, 2, 2), padding="same")(inputs)
    x = keras.layers.MaxPooling3D(2, padding="valid")(x)
    y = keras.layers.AveragePooling3D((1, 2, 2), padding="same")(x)
    y = keras.layers.Conv3DTranspose(3, 2, strides=2, padding="valid")(y)
    model = keras.Model(inputs, [x, y])
    mlmodel = ct.convert(model, inputs=[ct.TensorType(shape=(2, 6, 8, 8, 2))], convert_to="neuralnetwork",
                         minimum_deployment_target=ct.target.iOS14)
    path = tmp_path / "c3d.mlmodel"
    mlmodel.save(str(path))
    spec = ct.utils.load_spec(str(path))
    assert {"convolution3d", "pooling3d"} <= {lay.WhichOneof("layer") for lay in spec.neuralNetwork.layers}
    data = np.random.default_rng(2).standard_normal((2, 6, 8, 8, 2)).astype(np.float32)
    emulator = Emulator(path, "cpu_only")
    out = emulator.predict({spec.description.input[0].name: data})
    for got, want in zip([out[o.name] for o in spec.description.output], model.predict(data, verbose=0)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_loop_and_branch_layers(tmp_path):
    """A tf.while_loop (NN ``loop`` with a condition network) and a tf.cond (NN ``branch``):
    MIL while_loop and cond over the blobs the nested networks write; several trip counts and
    both branches. (One tf.function holding both does not convert: coremltools' TF2 control-flow
    rewrite fails on it.)"""
    import tensorflow as tf

    def loop(x, n):
        body = lambda i, acc: (i + 1.0, acc * 0.5 + tf.sin(acc))  # noqa: E731
        return tf.while_loop(lambda i, acc: i < n[0], body, [tf.constant(0.0), x])[1]

    def branch(x):
        return tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.exp(x) - 1.0, lambda: x * 3.0)

    x = np.linspace(-1, 2, 6, dtype=np.float32).reshape(2, 3)
    for scale, steps in ((1.0, 4.0), (-1.0, 0.0), (0.5, 7.0)):
        types, out, expected = _tf_graph_case(tmp_path, loop, [((2, 3), tf.float32), ((1,), tf.float32)],
                                              {"x": scale * x, "n": np.array([steps], np.float32)}, "loop")
        assert "loop" in types, types
        np.testing.assert_allclose(out[0], expected[0], atol=1e-5, rtol=0)
        types, out, expected = _tf_graph_case(tmp_path, branch, [((2, 3), tf.float32)], {"x": scale * x}, "branch")
        assert "branch" in types, types
        np.testing.assert_allclose(out[0], expected[0], atol=1e-5, rtol=0)


def test_a_branch_on_a_constant_builds_only_the_branch_taken(tmp_path):
    """A ``branch`` whose condition is a constant runs one branch, as the runtime does; the other
    may not be typable (here it concatenates blobs of different ranks), and is not built."""
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from precision_sweep.emulator import Emulator

    for condition, expected in ((1.0, lambda x: x * 2.0), (0.0, lambda x: x + 1.0)):
        builder = NeuralNetworkBuilder([("x", datatypes.Array(2, 3))], [("y", None)], disable_rank5_shape_mapping=True)
        builder.add_load_constant_nd("condition", "condition", np.array([condition], np.float32), (1,))
        builder.add_load_constant_nd("rank3", "rank3", np.zeros((1, 2, 3), np.float32), (1, 2, 3))
        branch = builder.add_branch("branch", "condition")
        taken = NeuralNetworkBuilder(nn_spec=branch.branch.ifBranch, disable_rank5_shape_mapping=True)
        taken.add_elementwise("double", ["x", "x"], "y", mode="ADD")
        other = NeuralNetworkBuilder(nn_spec=branch.branch.elseBranch, disable_rank5_shape_mapping=True)
        other.add_elementwise("plus_one", ["x"], "y", mode="ADD", alpha=1.0)
        not_taken = other if condition else taken  # it also concatenates a rank-2 and a rank-3 blob
        not_taken.add_concat_nd("mixed", ["x", "rank3"], "mixed", axis=0)
        path = tmp_path / f"branch_{int(condition)}.mlmodel"
        ct.utils.save_spec(builder.spec, str(path))
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        emulator = Emulator(path, "cpu_only")
        assert "cond" not in [step.op_type for step in emulator.plan.steps]
        np.testing.assert_array_equal(emulator.predict({"x": x})["y"], expected(x))


def test_normalization_reorganization_and_resize_layers(tmp_path):
    """lrn, l2normalize, reorganizeData (space to depth and back), resizeBilinear, crop (Keras
    Cropping2D), splitND, stack, tile, matrixBandPart."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)

    def fn(x):
        nchw = tf.transpose(x, [0, 3, 1, 2])
        lrn = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.5, alpha=0.3, beta=0.6)
        unit = tf.math.l2_normalize(x, axis=-1, epsilon=1e-6)
        shuffled = tf.nn.depth_to_space(tf.nn.space_to_depth(x * 2.0, 2), 2)
        resized = tf.image.resize(x, (11, 13), method="bilinear")
        cropped = x[:, 1:-2, 2:-1, :]
        a, b = tf.split(nchw, 2, axis=1)
        stacked = tf.stack([a, b * 2.0], axis=2)
        tiled = tf.tile(x[0, :2, :3, 0], [2, 3])
        band = tf.linalg.band_part(x[0, :, :, 1], 1, 2)
        return lrn, unit, shuffled, resized, cropped, stacked, tiled, band

    types, out, expected = _tf_graph_case(tmp_path, fn, [((1, 8, 8, 4), tf.float32)], {"x": x}, "norm")
    assert {"lrn", "reorganizeData", "splitND", "stack", "tile", "matrixBandPart"} <= types, types
    for got, want in zip(out, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_relu6_chain_runs_as_one_clip_with_the_same_bits(zoo, tmp_path):
    """coremltools writes relu6 as four NN layers (ReLU, linear -1, threshold -6, linear -1); the
    loader builds one ``clip`` for them, and every compute unit's result keeps its bits."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from precision_sweep.emulator import Emulator
    from precision_sweep.emulator.nn_program import nn_program

    @mb.program(input_specs=[mb.TensorSpec((2, 8))], opset_version=ct.target.iOS14)
    def chain(x):
        return mb.relu6(x=x)

    path = tmp_path / "relu6.mlmodel"
    ct.convert(chain, convert_to="neuralnetwork", minimum_deployment_target=ct.target.iOS14).save(str(path))
    spec = ct.utils.load_spec(str(path))
    assert [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers] == ["activation", "activation", "unary", "activation"]
    edges = np.array([[-0.0, 0.0, -1e-8, 1e-8, -3.0, 2.5, 5.999, 6.0],
                      [6.0001, 7.0, 1e30, -1e30, np.inf, -np.inf, np.nan, 65504.0]], np.float32)
    _, paths, x, _ = zoo
    for units in ("cpu_only", "cpu_and_gpu", "cpu_and_ne"):
        for file, feed in ((path, edges), (paths["iOS13"], x)):
            fused, as_written = Emulator(file, units), Emulator(nn_program(ct.utils.load_spec(str(file)), units, fuse=False), units)
            fused_ops = [step.op_type for step in fused.plan.steps]
            written_ops = [step.op_type for step in as_written.plan.steps]
            assert "threshold" not in fused_ops and "clip" in fused_ops and "threshold" in written_ops
            name = fused.output_names[0]
            feed_name = fused.input_names[0]
            got, want = fused.predict({feed_name: feed})[name], as_written.predict({feed_name: feed})[name]
            finite = ~np.isnan(want)
            assert np.array_equal(np.isnan(got), ~finite)
            assert np.array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32)), (units, file.name)
