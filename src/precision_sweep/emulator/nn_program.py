"""The second program format: a NeuralNetwork spec (``.mlmodel``, iOS13/iOS14 targets) read
as a MIL program, so that one executor, one set of kernels and one placement run both formats.

coremltools' own NN backend (``converters/mil/backend/nn/op_mapping.py``) is a table from MIL
op to NN layer; this module reads it the other way round: :data:`LAYERS` maps each NN layer
type to an adapter that builds the MIL op(s) computing the same maths with coremltools' MIL
builder, from the layer's parameters as ``NeuralNetwork.proto`` lays them out. Where a layer's
definition differs from its MIL counterpart, the adapter's docstring says how the proto's
text is followed. A layer type without an adapter is refused at load, naming the layer.

The spec's own parts become ops too: the image preprocessing (``scaler``: ``<input>__scaled__``
and ``<input>__biased__``, as coremltools names them in an ML program) and a classifier's
``classify`` (labels and the probability output's name from the spec).

Precision ("typed execution", coremltools' guide): a NeuralNetwork computes in fp32 on the CPU
and in fp16 on the GPU and the Neural Engine, whatever its weights. The program is built in
fp32; for a run whose compute units include the GPU or the Neural Engine, coremltools'
``FP16ComputePrecision`` pass types it fp16 (inputs and outputs stay fp32), and the ordinary
placement then puts each op on the engine, the GPU or the CPU under its measured numerics.
Quantized and fp16 weights are read back to their float values (:func:`weight_values`), as
the runtime does at load.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Specification versions this loader knows (Core ML 3 = iOS13 .. Core ML 5 = iOS15's NN).
KNOWN_SPEC_VERSIONS = range(1, 7)
NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")

LAYERS: dict[str, Callable] = {}


class UnsupportedLayerError(NotImplementedError):
    """The NeuralNetwork spec holds a layer type without an adapter."""


def layer(*layer_types: str):
    """Register an adapter ``fn(params, inputs, name, layer) -> Var | list[Var]``."""

    def register(fn):
        for layer_type in layer_types:
            LAYERS[layer_type] = fn
        return fn

    return register


def _mb():
    from coremltools.converters.mil.mil import Builder

    return Builder


def weight_values(params, shape=None, axis: int = 0) -> np.ndarray:
    """The float32 values of a ``WeightParams``: float, float16, or quantized.

    Quantized weights (``quantization`` with ``numberOfBits`` n, codes packed most significant
    bit first in ``rawValue``, as coremltools' ``quantization_utils`` writes them) are read back
    as the runtime does at load: linear ``code * scale + bias`` or a look-up table, either one
    for the whole tensor or one per channel along ``axis`` (the output channels; a
    deconvolution's are axis 1).
    """
    if len(params.floatValue):
        values = np.asarray(params.floatValue, dtype=np.float32)
    elif len(params.float16Value):
        values = np.frombuffer(params.float16Value, dtype=np.float16).astype(np.float32)
    elif params.HasField("quantization"):
        return _dequantized(params, tuple(shape), axis)
    elif len(params.rawValue):
        values = np.frombuffer(params.rawValue, dtype=np.float32).copy()
    else:
        values = np.zeros(0, dtype=np.float32)
    return values.reshape(shape) if shape is not None else values


def _dequantized(params, shape: tuple, axis: int) -> np.ndarray:
    quantization = params.quantization
    nbits = int(quantization.numberOfBits)
    count = int(np.prod(shape))
    raw = np.frombuffer(params.rawValue, dtype=np.uint8)
    if nbits == 8:
        codes = raw[:count].astype(np.int64)
    else:
        bits = np.unpackbits(raw)[: count * nbits].reshape(count, nbits).astype(np.int64)
        codes = bits @ (1 << np.arange(nbits - 1, -1, -1))
    codes = np.moveaxis(codes.reshape(shape), axis, 0)
    channels = codes.shape[0]
    if quantization.WhichOneof("QuantizationType") == "linearQuantization":
        # in float64, rounded once to float32, as coremltools' own _dequantize_linear computes it
        scale = np.asarray(quantization.linearQuantization.scale, dtype=np.float64)
        bias = np.asarray(quantization.linearQuantization.bias, dtype=np.float64)
        per = (channels,) + (1,) * (codes.ndim - 1)
        scale = scale.reshape(per) if scale.size == channels and channels > 1 else scale.reshape(-1)[0]
        bias = bias.reshape(per) if bias.size == channels and channels > 1 else bias.reshape(-1)[0]
        values = codes.astype(np.float64) * scale + bias
    else:
        table = np.asarray(quantization.lookupTableQuantization.floatValue, dtype=np.float32).reshape(-1, 1 << nbits)
        if table.shape[0] == 1:
            values = table[0][codes]
        else:
            values = np.take_along_axis(table, codes.reshape(channels, -1), axis=1).reshape(codes.shape)
    return np.ascontiguousarray(np.moveaxis(values.astype(np.float32), 0, axis))


# -- adapters, one per NN layer type (NeuralNetwork.proto) ------------------------------------


@layer("convolution")
def _convolution(p, inputs, name, _layer):
    """``ConvolutionLayerParams``: weights ``[outputChannels, kernelChannels, kH, kW]`` (a
    deconvolution's ``[kernelChannels, outputChannels / nGroups, kH, kW]``); ``same`` padding's
    ``BOTTOM_RIGHT_HEAVY`` is MIL's ``same``, ``TOP_LEFT_HEAVY`` its ``same_lower``; ``valid``
    padding carries explicit border amounts (MIL ``custom``)."""
    mb = _mb()
    kernel = [int(k) for k in p.kernelSize] or [3, 3]
    groups = int(p.nGroups) or 1
    if p.isDeconvolution:
        shape = (int(p.kernelChannels), int(p.outputChannels) // groups, *kernel)
    else:
        shape = (int(p.outputChannels), int(p.kernelChannels), *kernel)
    weight = weight_values(p.weights, shape, axis=1 if p.isDeconvolution else 0)
    kwargs = {"strides": [int(s) for s in p.stride] or [1, 1], "dilations": [int(d) for d in p.dilationFactor] or [1, 1],
              "groups": groups}
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        kwargs["pad_type"] = "same_lower" if p.same.asymmetryMode == 1 else "same"
    else:
        amounts = [(int(b.startEdgeSize), int(b.endEdgeSize)) for b in p.valid.paddingAmounts.borderAmounts]
        pad = [a for pair in amounts for a in pair] or [0, 0, 0, 0]
        kwargs["pad_type"], kwargs["pad"] = ("custom", pad) if any(pad) else ("valid", [0, 0, 0, 0])
    if p.hasBias:
        kwargs["bias"] = weight_values(p.bias)
    if p.isDeconvolution:
        # ``outputShape`` (height, width) is what MIL's formula gives for the padding coremltools
        # emits; MIL's own ``output_shape`` would need the batch, which is open here
        kwargs.pop("dilations")
        out = mb.conv_transpose(x=inputs[0], weight=weight, name=name, **kwargs)
        if len(p.outputShape) and tuple(out.shape[-2:]) != tuple(int(v) for v in p.outputShape):
            raise UnsupportedLayerError(f"deconvolution with outputShape {list(p.outputShape)} (MIL gives {out.shape[-2:]})")
        return out
    return mb.conv(x=inputs[0], weight=weight, name=name, **kwargs)


_ACTIVATIONS = {
    "ReLU": lambda mb, x, a, name: mb.relu(x=x, name=name),
    "tanh": lambda mb, x, a, name: mb.tanh(x=x, name=name),
    "sigmoid": lambda mb, x, a, name: mb.sigmoid(x=x, name=name),
    "leakyReLU": lambda mb, x, a, name: mb.leaky_relu(x=x, alpha=float(a.alpha), name=name),
    "linear": lambda mb, x, a, name: mb.linear_activation(x=x, alpha=float(a.alpha), beta=float(a.beta), name=name),
    "sigmoidHard": lambda mb, x, a, name: mb.sigmoid_hard(x=x, alpha=float(a.alpha), beta=float(a.beta), name=name),
    "ELU": lambda mb, x, a, name: mb.elu(x=x, alpha=float(a.alpha), name=name),
    "softsign": lambda mb, x, a, name: mb.softsign(x=x, name=name),
    "softplus": lambda mb, x, a, name: mb.softplus(x=x, name=name),
    "thresholdedReLU": lambda mb, x, a, name: mb.thresholded_relu(x=x, alpha=float(a.alpha), name=name),
    "scaledTanh": lambda mb, x, a, name: mb.scaled_tanh(x=x, alpha=float(a.alpha), beta=float(a.beta), name=name),
}


@layer("activation")
def _activation(p, inputs, name, _layer):
    """``ActivationParams``: one of its non-linearities, with the same parameter names as the
    MIL activations (``PReLU`` carries one alpha per channel, axis -3)."""
    mb = _mb()
    kind = p.WhichOneof("NonlinearityType")
    if kind == "PReLU":
        return mb.prelu(x=inputs[0], alpha=weight_values(p.PReLU.alpha), name=name)
    if kind == "parametricSoftplus":
        return mb.softplus_parametric(x=inputs[0], alpha=weight_values(p.parametricSoftplus.alpha),
                                      beta=weight_values(p.parametricSoftplus.beta), name=name)
    if kind not in _ACTIVATIONS:
        raise UnsupportedLayerError(f"activation {kind}")
    return _ACTIVATIONS[kind](mb, inputs[0], getattr(p, kind), name)


@layer("clip")
def _clip(p, inputs, name, _layer):
    return _mb().clip(x=inputs[0], alpha=float(p.minVal), beta=float(p.maxVal), name=name)


@layer("innerProduct")
def _inner_product(p, inputs, name, _layer):
    """``InnerProductLayerParams`` on the last axis (how coremltools emits it, for inputs of
    rank 1 to 3): weights ``[outputChannels, inputChannels]``."""
    mb = _mb()
    weight = weight_values(p.weights, (int(p.outputChannels), int(p.inputChannels)))
    bias = weight_values(p.bias) if p.hasBias else np.zeros(int(p.outputChannels), np.float32)
    return mb.linear(x=inputs[0], weight=weight, bias=bias, name=name)


@layer("batchedMatmul")
def _batched_matmul(p, inputs, name, _layer):
    """``BatchedMatMulLayerParams``: with one input, ``x @ W + bias`` where ``W`` is
    ``[weightMatrixFirstDimension, weightMatrixSecondDimension]`` (in, out) and is stored
    transposed, ``[out, in]`` (coremltools' builder writes ``W.T``): MIL ``linear``'s layout;
    with two inputs, ``x @ y`` with the transposes."""
    mb = _mb()
    if len(inputs) == 2:
        return mb.matmul(x=inputs[0], y=inputs[1], transpose_x=bool(p.transposeA), transpose_y=bool(p.transposeB), name=name)
    rows, columns = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    weight = weight_values(p.weights, (columns, rows))
    bias = weight_values(p.bias) if p.hasBias else np.zeros(columns, np.float32)
    return mb.linear(x=inputs[0], weight=weight, bias=bias, name=name)


@layer("softmaxND")
def _softmax_nd(p, inputs, name, _layer):
    return _mb().softmax(x=inputs[0], axis=int(p.axis), name=name)


@layer("softmax")
def _softmax(p, inputs, name, _layer):
    """``SoftmaxLayerParams``: over the channel axis of a rank >= 3 blob (axis -3)."""
    return _mb().softmax(x=inputs[0], axis=-3, name=name)


@layer("transpose")
def _transpose(p, inputs, name, _layer):
    return _mb().transpose(x=inputs[0], perm=[int(a) for a in p.axes], name=name)


@layer("reshapeStatic")
def _reshape_static(p, inputs, name, _layer):
    return _mb().reshape(x=inputs[0], shape=[int(s) for s in p.targetShape], name=name)


@layer("flattenTo2D")
def _flatten_to_2d(p, inputs, name, _layer):
    mb = _mb()
    axis = int(p.axis)
    x = inputs[0]
    rank = len(x.shape)
    axis = axis + rank if axis < 0 else axis
    shape = mb.shape(x=x)
    head = mb.reduce_prod(x=mb.slice_by_index(x=shape, begin=[0], end=[axis]), keep_dims=True) if axis else [1]
    return mb.reshape(x=x, shape=mb.concat(values=[head, [-1]], axis=0), name=name)


@layer("squeeze")
def _squeeze(p, inputs, name, _layer):
    return _mb().squeeze(x=inputs[0], **({} if p.squeezeAll else {"axes": [int(a) for a in p.axes]}), name=name)


@layer("expandDims")
def _expand_dims(p, inputs, name, _layer):
    return _mb().expand_dims(x=inputs[0], axes=[int(a) for a in p.axes], name=name)


def _reduce(op_type):
    def adapter(p, inputs, name, _layer):
        mb = _mb()
        kwargs = {"keep_dims": bool(p.keepDims)}
        if not p.reduceAll:
            kwargs["axes"] = [int(a) for a in p.axes]
        return getattr(mb, op_type)(x=inputs[0], name=name, **kwargs)

    return adapter


for _layer_type, _op in {"reduceMean": "reduce_mean", "reduceSum": "reduce_sum", "reduceMax": "reduce_max",
                         "reduceMin": "reduce_min", "reduceProd": "reduce_prod", "reduceL2": "reduce_l2_norm",
                         "reduceL1": "reduce_l1_norm", "reduceSumSquare": "reduce_sum_square",
                         "reduceLogSum": "reduce_log_sum", "reduceLogSumExp": "reduce_log_sum_exp"}.items():
    layer(_layer_type)(_reduce(_op))


@layer("pooling")
def _pooling(p, inputs, name, _layer):
    """``PoolingLayerParams``: MAX/AVERAGE (L2 as l2_pool); ``globalPooling`` is a mean/max over
    the last two axes; ``same`` padding as in convolution; ``avgPoolExcludePadding`` is MIL's
    ``exclude_padding_from_average``. ``includeLastPixel`` padding is refused (coremltools
    emits it only for ceil-mode pools)."""
    mb = _mb()
    x = inputs[0]
    kind = ("max", "avg", "l2")[int(p.type)]
    if p.globalPooling:
        fn = {"max": mb.reduce_max, "avg": mb.reduce_mean, "l2": mb.reduce_l2_norm}[kind]
        return fn(x=x, axes=[-2, -1], keep_dims=True, name=name)
    kwargs = {"kernel_sizes": [int(k) for k in p.kernelSize], "strides": [int(s) for s in p.stride]}
    padding = p.WhichOneof("PoolingPaddingType")
    if padding == "same":
        kwargs["pad_type"] = "same_lower" if p.same.asymmetryMode == 1 else "same"
    elif padding == "valid":
        amounts = [(int(b.startEdgeSize), int(b.endEdgeSize)) for b in p.valid.paddingAmounts.borderAmounts]
        pad = [a for pair in amounts for a in pair] or [0, 0, 0, 0]
        kwargs["pad_type"], kwargs["pad"] = ("custom", pad) if any(pad) else ("valid", [0, 0, 0, 0])
    else:
        raise UnsupportedLayerError("pooling with includeLastPixel padding")
    if kind == "avg":
        return mb.avg_pool(x=x, exclude_padding_from_average=bool(p.avgPoolExcludePadding), name=name, **kwargs)
    return getattr(mb, f"{kind}_pool")(x=x, name=name, **kwargs)


def _elementwise(op_type, scalar_field: str | None):
    """``add``/``multiply`` (all inputs, plus ``alpha`` when there is one input) and the
    ``*Broadcastable`` layers (two inputs, numpy broadcasting, as MIL's)."""

    def adapter(p, inputs, name, _layer):
        mb = _mb()
        fn = getattr(mb, op_type)
        if len(inputs) == 1 and scalar_field:
            return fn(x=inputs[0], y=np.float32(getattr(p, scalar_field)), name=name)
        result = inputs[0]
        for i, other in enumerate(inputs[1:]):
            result = fn(x=result, y=other, name=name if i == len(inputs) - 2 else f"{name}_{i}")
        return result

    return adapter


layer("add")(_elementwise("add", "alpha"))
layer("multiply")(_elementwise("mul", "alpha"))
layer("addBroadcastable")(_elementwise("add", None))
layer("multiplyBroadcastable")(_elementwise("mul", None))
layer("subtractBroadcastable")(_elementwise("sub", None))
layer("divideBroadcastable")(_elementwise("real_div", None))
layer("maxBroadcastable")(_elementwise("maximum", None))
layer("minBroadcastable")(_elementwise("minimum", None))
layer("powBroadcastable")(_elementwise("pow", None))


@layer("concatND")
def _concat_nd(p, inputs, name, _layer):
    return _mb().concat(values=list(inputs), axis=int(p.axis), name=name)


@layer("concat")
def _concat(p, inputs, name, _layer):
    """``ConcatLayerParams``: along the channel axis (-3), or the sequence axis (-5)."""
    return _mb().concat(values=list(inputs), axis=-5 if p.sequenceConcat else -3, name=name)


@layer("batchnorm")
def _batchnorm(p, inputs, name, _layer):
    """``BatchnormLayerParams`` over the channel axis (-3, i.e. axis 1 of NCHW)."""
    channels = int(p.channels)
    return _mb().batch_norm(
        x=inputs[0], mean=weight_values(p.mean, (channels,)), variance=weight_values(p.variance, (channels,)),
        gamma=weight_values(p.gamma, (channels,)), beta=weight_values(p.beta, (channels,)), epsilon=float(p.epsilon) or 1e-5,
        name=name,
    )


@layer("loadConstantND")
def _load_constant_nd(p, inputs, name, _layer):
    return _mb().const(val=weight_values(p.data, tuple(int(s) for s in p.shape)), name=name)


@layer("unary")
def _unary(p, inputs, name, _layer):
    """``UnaryFunctionLayerParams``: ``f(scale * x + shift)`` with ``alpha`` and ``epsilon``."""
    mb = _mb()
    x = inputs[0]
    if p.scale not in (0.0, 1.0) or p.shift != 0.0:
        x = mb.add(x=mb.mul(x=x, y=np.float32(p.scale or 1.0)), y=np.float32(p.shift))
    kind = int(p.type)
    epsilon = np.float32(p.epsilon or 1e-6)
    builders = {
        0: lambda: mb.sqrt(x=x, name=name),
        1: lambda: mb.rsqrt(x=x, epsilon=epsilon, name=name),
        2: lambda: mb.inverse(x=x, epsilon=epsilon, name=name),
        3: lambda: mb.pow(x=x, y=np.float32(p.alpha), name=name),
        4: lambda: mb.exp(x=x, name=name),
        5: lambda: mb.log(x=x, epsilon=epsilon, name=name),
        6: lambda: mb.abs(x=x, name=name),
        7: lambda: mb.threshold(x=x, alpha=np.float32(p.alpha), name=name),
    }
    return builders[kind]()


@layer("gelu")
def _gelu(p, inputs, name, _layer):
    mode = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")[int(p.mode)]
    return _mb().gelu(x=inputs[0], mode=mode, name=name)


@layer("sliceStatic")
def _slice_static(p, inputs, name, _layer):
    return _mb().slice_by_index(
        x=inputs[0], begin=[int(v) for v in p.beginIds], end=[int(v) for v in p.endIds],
        stride=[int(v) for v in p.strides], begin_mask=list(p.beginMasks), end_mask=list(p.endMasks), name=name,
    )


@layer("padding")
def _padding(p, inputs, name, _layer):
    """``PaddingLayerParams``: the last two axes, ``paddingAmounts`` [height, width] as (start,
    end) pairs; constant (``value``), reflection or replication (MIL ``reflect``/``replicate``)."""
    amounts = [(int(b.startEdgeSize), int(b.endEdgeSize)) for b in p.paddingAmounts.borderAmounts] or [(0, 0), (0, 0)]
    pad = [a for pair in amounts for a in pair]
    kind = p.WhichOneof("PaddingType")
    mode = {"constant": "constant", "reflection": "reflect", "replication": "replicate"}[kind]
    kwargs = {"constant_val": np.float32(p.constant.value)} if kind == "constant" else {}
    return _mb().pad(x=inputs[0], pad=pad, mode=mode, name=name, **kwargs)


@layer("constantPad")
def _constant_pad(p, inputs, name, _layer):
    """``ConstantPaddingLayerParams``: ``padAmounts`` (start, end) per axis from the first (or,
    with ``padToGivenOutputSizeMode``, refused: coremltools emits it only for dynamic shapes)."""
    if p.padToGivenOutputSizeMode:
        raise UnsupportedLayerError("constantPad with padToGivenOutputSizeMode")
    return _mb().pad(x=inputs[0], pad=[int(a) for a in p.padAmounts], mode="constant", constant_val=np.float32(p.value),
                     name=name)


@layer("tile")
def _tile(p, inputs, name, _layer):
    return _mb().tile(x=inputs[0], reps=[int(r) for r in p.reps], name=name)


@layer("upsample")
def _upsample(p, inputs, name, _layer):
    """``UpsampleLayerParams``: integer (or fractional) scales of the last two axes, nearest or
    bilinear (``linearUpsampleMode`` DEFAULT = align_corners false, ALIGN_CORNERS_TRUE/FALSE)."""
    mb = _mb()
    scales = [float(v) for v in p.fractionalScalingFactor] or [float(v) for v in p.scalingFactor] or [1.0, 1.0]
    if int(p.mode) == 0:
        return mb.upsample_nearest_neighbor(x=inputs[0], scale_factor_height=scales[0], scale_factor_width=scales[1],
                                            name=name)
    align = int(p.linearUpsampleMode) == 1
    return mb.upsample_bilinear(x=inputs[0], scale_factor_height=scales[0], scale_factor_width=scales[1],
                                align_corners=align, name=name)


# -- the spec's own parts and the program ---------------------------------------------------------


def _input_shape(feature, flexible_batch_symbol):
    """(shape, dtype name) of an input: an image is (batch, C, H, W) (RANK4_IMAGE_MAPPING); a
    multi-array its shape with ranged dimensions open."""
    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        image = feature.type.imageType
        from coremltools.proto import FeatureTypes_pb2

        layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        channels = 1 if layout.startswith("GRAYSCALE") else 3
        return (1, channels, int(image.height), int(image.width)), layout
    array = feature.type.multiArrayType
    shape = [int(s) for s in array.shape]
    ranges = list(array.shapeRange.sizeRanges)
    for i, size in enumerate(ranges):
        if i < len(shape) and int(size.upperBound) != int(size.lowerBound):
            shape[i] = flexible_batch_symbol() if i == 0 else flexible_batch_symbol()
    return tuple(shape), None


def _preprocess(mb, x, preprocessing, layout: str, name: str):
    """The spec's ``scaler`` as coremltools inserts an ImageType's: ``x * channelScale`` then
    ``+ bias`` in the image's channel order (RGB: red, green, blue; BGR: blue, green, red)."""
    scaler = preprocessing.scaler
    scale = float(scaler.channelScale) if scaler.channelScale else 1.0
    if layout.startswith("GRAYSCALE"):
        bias = [float(scaler.grayBias)]
    elif layout == "BGR":
        bias = [float(scaler.blueBias), float(scaler.greenBias), float(scaler.redBias)]
    else:
        bias = [float(scaler.redBias), float(scaler.greenBias), float(scaler.blueBias)]
    if scale != 1.0:
        x = mb.mul(x=x, y=np.float32(scale), name=f"{name}__scaled__")
    if any(bias):
        x = mb.add(x=x, y=np.asarray(bias, np.float32).reshape(1, len(bias), 1, 1), name=f"{name}__biased__")
    return x


def refuse_unknown_layers(network) -> None:
    """Raise :class:`UnsupportedLayerError` naming every layer without an adapter."""
    missing = [(lay.name, lay.WhichOneof("layer")) for lay in network.layers if lay.WhichOneof("layer") not in LAYERS]
    if missing:
        listed = ", ".join(f"{n!r} ({t})" for n, t in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise UnsupportedLayerError(
            f"The emulator cannot execute NeuralNetwork layer(s) {listed}{more}: no adapter for "
            f"{', '.join(sorted({t for _, t in missing}))}. Supported layer types: {', '.join(sorted(LAYERS))}. "
            "Convert for iOS15 or later (an ML program), or run with runtime=coreml on macOS."
        )


def nn_program(spec, compute_units: str = "cpu_only"):
    """The MIL program of a NeuralNetwork ``spec`` (see the module docstring)."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Function, Program, types
    from coremltools.converters.mil.mil.program import get_new_symbol

    kind = spec.WhichOneof("Type")
    network = getattr(spec, kind)
    refuse_unknown_layers(network)
    mb = _mb()
    layouts = {}
    placeholders = {}
    symbol = get_new_symbol
    for feature in spec.description.input:
        shape, layout = _input_shape(feature, symbol)
        layouts[feature.name] = layout
        placeholders[feature.name] = mb.placeholder(shape=shape, dtype=types.fp32)
    preprocessing = {p.featureName or spec.description.input[0].name: p for p in network.preprocessing}
    with Function(placeholders, opset_version=ct.target.iOS15) as function:
        values = dict(function.inputs)
        for name, layout in layouts.items():
            if layout is not None and name in preprocessing:
                values[name] = _preprocess(mb, values[name], preprocessing[name], layout, name)
        for lay in network.layers:
            layer_type = lay.WhichOneof("layer")
            inputs = [values[n] for n in lay.input]
            out = LAYERS[layer_type](getattr(lay, layer_type), inputs, lay.output[0] if len(lay.output) == 1 else lay.name, lay)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for output_name, var in zip(lay.output, outs):
                values[output_name] = var
        outputs = _outputs(mb, spec, kind, network, values)
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    if compute_units != "cpu_only":  # the GPU and the Neural Engine compute a NeuralNetwork in fp16
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

        ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type != "classify")(program)
        for name in ("common::cast_optimization", "common::dead_code_elimination"):  # one cast per input
            PASS_REGISTRY[name](program)
    return program


def _outputs(mb, spec, kind, network, values) -> list:
    """The program outputs: a classifier's ``classify`` (label, probabilities), else the
    spec's outputs by name."""
    description = spec.description
    if kind != "neuralNetworkClassifier":
        return [values[o.name] for o in description.output]
    from coremltools.converters.mil.mil import types

    if network.WhichOneof("ClassLabels") == "stringClassLabels":
        classes = [str(c) for c in network.stringClassLabels.vector]
    else:
        classes = [np.int64(c) for c in network.int64ClassLabels.vector]
    probabilities_name = network.labelProbabilityLayerName or description.predictedProbabilitiesName
    probabilities = values[probabilities_name]
    probabilities.name = f"{probabilities_name}__scores"  # the dictionary output takes the spec's name
    if probabilities.dtype != types.fp32:
        probabilities = mb.cast(x=probabilities, dtype="fp32")
    from coremltools.converters.mil.mil.operation import mil_list

    label, probs = mb.classify(probabilities=probabilities, classes=mb.const(val=mil_list(classes)))
    label.name = description.predictedFeatureName or "classLabel"
    probs.name = description.predictedProbabilitiesName or probabilities_name
    return [label, probs]
