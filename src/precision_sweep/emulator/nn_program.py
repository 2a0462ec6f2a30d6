"""The second program format: a NeuralNetwork spec (``.mlmodel``, iOS13/iOS14 targets) read
as a MIL program, so that one executor, one set of kernels and one placement run both formats.

coremltools' own NN backend (``converters/mil/backend/nn/op_mapping.py``) is a table from MIL
op to NN layer; this module reads it the other way round: :data:`LAYERS` maps each NN layer
type to an adapter that builds the MIL op(s) computing the same maths with coremltools' MIL
builder, from the layer's parameters as ``NeuralNetwork.proto`` lays them out. Where a layer's
definition differs from its MIL counterpart, the adapter's docstring says how the proto's
text is followed. A layer type without an adapter is refused at load, naming the layer.

Conventions of the format the adapters follow (``NeuralNetwork.proto``), where MIL differs:
every blob is fp32 (comparisons and logical layers write 1.0/0.0, index outputs such as
argMax's are floats, index inputs are floats read as integers), no blob has rank 0 (a scalar
is shape (1,)), the older layers (``softmax``, ``concat``, ``batchnorm``, ``slice``, ``scale``,
``l2normalize``, ``mvn``, ``lrn``) work on the last three axes as (C, H, W), and blob names are
global, so a ``loop`` or ``branch`` communicates through the blobs its nested networks write.

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

import numpy as np

from precision_sweep.emulator.nn_layers import LAYERS, UnsupportedLayerError, layer, mil_builder, weight_values

# Specification versions this loader knows (Core ML 3 = iOS13 .. Core ML 5 = iOS15's NN).
KNOWN_SPEC_VERSIONS = range(1, 7)
NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")

# -- adapters, one per NN layer type (NeuralNetwork.proto) ------------------------------------


@layer("convolution")
def _convolution(p, inputs, name, _layer):
    """``ConvolutionLayerParams``: weights ``[outputChannels, kernelChannels, kH, kW]`` (a
    deconvolution's ``[kernelChannels, outputChannels / nGroups, kH, kW]``); ``same`` padding's
    ``BOTTOM_RIGHT_HEAVY`` is MIL's ``same``, ``TOP_LEFT_HEAVY`` its ``same_lower``; ``valid``
    padding carries explicit border amounts (MIL ``custom``). With a second input, the weights
    are that blob (coremltools then adds the bias with a separate layer)."""
    mb = mil_builder()
    kernel = [int(k) for k in p.kernelSize] or [3, 3]
    groups = int(p.nGroups) or 1
    if p.isDeconvolution:
        shape = (int(p.kernelChannels), int(p.outputChannels) // groups, *kernel)
    else:
        shape = (int(p.outputChannels), int(p.kernelChannels), *kernel)
    if len(inputs) > 1:  # weights from a blob: [outputChannels, kernelChannels, kH, kW], MIL's layout
        weight = inputs[1]
    else:
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
        wanted = tuple(int(v) for v in p.outputShape) or _short_kernel_same(out, kernel, kwargs)
        if wanted and tuple(out.shape[-2:]) != wanted or _short_kernel_same(out, kernel, kwargs):
            # a larger output (TF's output_padding under stride > 1): MIL's ``output_shape``
            out = _with_output_shape(out, inputs[0], weight, int(shape[1] * groups), wanted, name,
                                     {**kwargs, "groups": groups})
        return out
    return mb.conv(x=inputs[0], weight=weight, name=name, **kwargs)


def _short_kernel_same(out, kernel, kwargs) -> tuple:
    """The output size of a ``same`` deconvolution with a kernel shorter than its stride on some
    axis (``in * stride``), which the emulator's ``conv_transpose`` kernel mis-sizes (its crop
    turns negative): such a layer takes :func:`_with_output_shape`'s route. Else ()."""
    strides = [int(v) for v in kwargs.get("strides", [1] * len(kernel))]
    if kwargs.get("pad_type") not in ("same", "same_lower") or all(int(k) >= s for k, s in zip(kernel, strides)):
        return ()
    shape = out.shape[2:]
    return tuple(int(v) for v in shape) if all(isinstance(v, (int, np.integer)) for v in shape) else ()


def _with_output_shape(default, x, weight, channels: int, wanted: tuple, name: str, kwargs: dict):
    """A deconvolution whose ``outputShape`` is larger than MIL's default formula gives (TF's
    ``output_padding``). The emulator's ``conv_transpose`` kernel only crops to an
    ``output_shape``, so this is built from MIL ops of the same maths: the uncropped transposed
    convolution (``valid``, no bias), the window of ``outputShape`` taken from it as the
    padding places it (``same``: TF's split of the total padding, the larger half at the end;
    explicit amounts: their start; ``valid``: from 0), zeros where the window passes the end
    (no kernel tap reaches there), then the bias."""
    mb = mil_builder()
    spatial = [int(v) for v in x.shape[2:]] if all(isinstance(v, (int, np.integer)) for v in x.shape[2:]) else None
    if spatial is None or not isinstance(weight, np.ndarray) or any(int(d) != 1 for d in kwargs.get("dilations", [1])):
        raise UnsupportedLayerError(f"deconvolution {name!r} with outputShape {list(wanted)} and open or dilated input")
    default.op.enclosing_block.remove_ops([default.op])
    strides, kernel = [int(v) for v in kwargs["strides"]], weight.shape[2:]
    full = mb.conv_transpose(x=x, weight=weight, strides=strides, groups=kwargs.get("groups", 1), pad_type="valid")
    begin, end, tail = [0, 0], [0, 0], []
    for axis, (size, s, k, out) in enumerate(zip(spatial, strides, kernel, wanted)):
        length = (size - 1) * s + k
        if kwargs["pad_type"] in ("same", "same_lower"):
            total = max((-(-out // s) - 1) * s + k - out, 0)
            start = total // 2 if kwargs["pad_type"] == "same" else total - total // 2
        elif kwargs["pad_type"] == "custom":
            start = int(kwargs["pad"][2 * axis])
        else:
            start = 0
        begin.append(start)
        end.append(min(start + out, length))
        tail.append(max(start + out - length, 0))
    rank = len(x.shape)
    window = mb.slice_by_index(x=full, begin=begin, end=end, begin_mask=[True, True] + [False] * (rank - 2),
                               end_mask=[True, True] + [False] * (rank - 2))
    if any(tail):
        window = mb.pad(x=window, pad=[a for t in tail for a in (0, t)], mode="constant", constant_val=np.float32(0))
    bias = kwargs.get("bias")
    if bias is None:
        return mb.identity(x=window, name=name)
    return mb.add(x=window, y=np.asarray(bias, np.float32).reshape((channels,) + (1,) * (rank - 2)), name=name)


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
    mb = mil_builder()
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
    return mil_builder().clip(x=inputs[0], alpha=float(p.minVal), beta=float(p.maxVal), name=name)


@layer("innerProduct")
def _inner_product(p, inputs, name, _layer):
    """``InnerProductLayerParams`` on the last axis (how coremltools emits it, for inputs of
    rank 1 to 3): weights ``[outputChannels, inputChannels]``."""
    mb = mil_builder()
    weight = weight_values(p.weights, (int(p.outputChannels), int(p.inputChannels)))
    bias = weight_values(p.bias) if p.hasBias else np.zeros(int(p.outputChannels), np.float32)
    return mb.linear(x=inputs[0], weight=weight, bias=bias, name=name)


@layer("batchedMatmul")
def _batched_matmul(p, inputs, name, _layer):
    """``BatchedMatMulLayerParams``: with one input, ``x @ W + bias`` where ``W`` is
    ``[weightMatrixFirstDimension, weightMatrixSecondDimension]`` (in, out) and is stored
    transposed, ``[out, in]`` (coremltools' builder writes ``W.T``): MIL ``linear``'s layout;
    with two inputs, ``x @ y`` with the transposes."""
    mb = mil_builder()
    if len(inputs) == 2:
        return mb.matmul(x=inputs[0], y=inputs[1], transpose_x=bool(p.transposeA), transpose_y=bool(p.transposeB), name=name)
    rows, columns = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    weight = weight_values(p.weights, (columns, rows))
    bias = weight_values(p.bias) if p.hasBias else np.zeros(columns, np.float32)
    return mb.linear(x=inputs[0], weight=weight, bias=bias, name=name)


@layer("softmaxND")
def _softmax_nd(p, inputs, name, _layer):
    """``SoftmaxNDLayerParams``: over ``axis`` of a blob of any rank (negative counts from the
    end), MIL ``softmax``'s axis; the older ``softmax`` layer is fixed to the channel axis."""
    return mil_builder().softmax(x=inputs[0], axis=int(p.axis), name=name)


@layer("softmax")
def _softmax(p, inputs, name, _layer):
    """``SoftmaxLayerParams``: over the channel axis of a rank >= 3 blob (axis -3)."""
    return mil_builder().softmax(x=inputs[0], axis=-3, name=name)


@layer("transpose")
def _transpose(p, inputs, name, _layer):
    return mil_builder().transpose(x=inputs[0], perm=[int(a) for a in p.axes], name=name)


@layer("reshapeStatic")
def _reshape_static(p, inputs, name, _layer):
    return mil_builder().reshape(x=inputs[0], shape=[int(s) for s in p.targetShape], name=name)


@layer("flattenTo2D")
def _flatten_to_2d(p, inputs, name, _layer):
    mb = mil_builder()
    axis = int(p.axis)
    x = inputs[0]
    rank = len(x.shape)
    axis = axis + rank if axis < 0 else axis
    shape = mb.shape(x=x)
    head = mb.reduce_prod(x=mb.slice_by_index(x=shape, begin=[0], end=[axis]), keep_dims=True) if axis else [1]
    return mb.reshape(x=x, shape=mb.concat(values=[head, [-1]], axis=0), name=name)


@layer("squeeze")
def _squeeze(p, inputs, name, _layer):
    return mil_builder().squeeze(x=inputs[0], **({} if p.squeezeAll else {"axes": [int(a) for a in p.axes]}), name=name)


@layer("expandDims")
def _expand_dims(p, inputs, name, _layer):
    return mil_builder().expand_dims(x=inputs[0], axes=[int(a) for a in p.axes], name=name)


def _reduce(op_type):
    def adapter(p, inputs, name, _layer):
        mb = mil_builder()
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
    mb = mil_builder()
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
        mb = mil_builder()
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
    return mil_builder().concat(values=list(inputs), axis=int(p.axis), name=name)


@layer("concat")
def _concat(p, inputs, name, _layer):
    """``ConcatLayerParams``: along the channel axis (-3), or the sequence axis (-5)."""
    return mil_builder().concat(values=list(inputs), axis=-5 if p.sequenceConcat else -3, name=name)


@layer("batchnorm")
def _batchnorm(p, inputs, name, _layer):
    """``BatchnormLayerParams`` over the channel axis (-3, i.e. axis 1 of NCHW)."""
    channels = int(p.channels)
    return mil_builder().batch_norm(
        x=inputs[0], mean=weight_values(p.mean, (channels,)), variance=weight_values(p.variance, (channels,)),
        gamma=weight_values(p.gamma, (channels,)), beta=weight_values(p.beta, (channels,)), epsilon=float(p.epsilon) or 1e-5,
        name=name,
    )


@layer("loadConstantND")
def _load_constant_nd(p, inputs, name, _layer):
    return mil_builder().const(val=weight_values(p.data, tuple(int(s) for s in p.shape)), name=name)


@layer("unary")
def _unary(p, inputs, name, _layer):
    """``UnaryFunctionLayerParams``: ``f(scale * x + shift)`` with ``alpha`` and ``epsilon``."""
    mb = mil_builder()
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
    return mil_builder().gelu(x=inputs[0], mode=mode, name=name)


@layer("sliceStatic")
def _slice_static(p, inputs, name, _layer):
    """``SliceStaticLayerParams``: MIL ``slice_by_index``. A squeezed axis takes the one element
    at its begin (its end is not read) and is removed as :func:`_squeezed` says."""
    begin, end = [int(v) for v in p.beginIds], [int(v) for v in p.endIds]
    end_mask = list(p.endMasks)
    for axis, squeezed in enumerate(p.squeezeMasks):
        if squeezed:
            start = 0 if p.beginMasks[axis] else begin[axis]
            end[axis], end_mask[axis] = start + 1, start == -1
    out = mil_builder().slice_by_index(x=inputs[0], begin=begin, end=end, stride=[int(v) for v in p.strides],
                               begin_mask=list(p.beginMasks), end_mask=end_mask,
                               **({} if any(p.squeezeMasks) else {"name": name}))
    return _squeezed(out, p.squeezeMasks, name) if any(p.squeezeMasks) else out


def _squeezed(var, mask, name):
    """``squeezeMasks``' axes removed; all of them leave shape (1,), NeuralNetwork's scalar (and
    keeps MIL's value inference off rank-0 symbolic values, such as a dimension of getShape)."""
    axes = [i for i, flag in enumerate(mask) if flag]
    if len(axes) == var.rank:
        return mil_builder().reshape(x=var, shape=[1], name=name)
    return mil_builder().squeeze(x=var, axes=axes, name=name)


@layer("padding")
def _padding(p, inputs, name, _layer):
    """``PaddingLayerParams``: the last two axes, ``paddingAmounts`` [height, width] as (start,
    end) pairs; constant (``value``), reflection or replication (MIL ``reflect``/``replicate``)."""
    amounts = [(int(b.startEdgeSize), int(b.endEdgeSize)) for b in p.paddingAmounts.borderAmounts] or [(0, 0), (0, 0)]
    pad = [a for pair in amounts for a in pair]
    kind = p.WhichOneof("PaddingType")
    mode = {"constant": "constant", "reflection": "reflect", "replication": "replicate"}[kind]
    kwargs = {"constant_val": np.float32(p.constant.value)} if kind == "constant" else {}
    return mil_builder().pad(x=inputs[0], pad=pad, mode=mode, name=name, **kwargs)


@layer("constantPad")
def _constant_pad(p, inputs, name, _layer):
    """``ConstantPaddingLayerParams``: ``padAmounts`` (start, end) per trailing axis, or the
    second (float) input; ``padToGivenOutputSizeMode`` is refused (the NN backend never sets it)."""
    if p.padToGivenOutputSizeMode:
        raise UnsupportedLayerError("constantPad with padToGivenOutputSizeMode")
    pad = _int32(inputs[1]) if len(inputs) > 1 else [int(a) for a in p.padAmounts]
    return mil_builder().pad(x=inputs[0], pad=pad, mode="constant", constant_val=np.float32(p.value), name=name)


@layer("tile")
def _tile(p, inputs, name, _layer):
    """``TileLayerParams``: ``reps``, or the second (float) input."""
    reps = _int32(inputs[1]) if len(inputs) > 1 else [int(r) for r in p.reps]
    return mil_builder().tile(x=inputs[0], reps=reps, name=name)


@layer("upsample")
def _upsample(p, inputs, name, _layer):
    """``UpsampleLayerParams``: integer (or fractional) scales of the last two axes, nearest or
    bilinear (``linearUpsampleMode`` DEFAULT = align_corners false, ALIGN_CORNERS_TRUE/FALSE)."""
    mb = mil_builder()
    scales = [float(v) for v in p.fractionalScalingFactor] or [float(v) for v in p.scalingFactor] or [1.0, 1.0]
    if int(p.mode) == 0:
        return mb.upsample_nearest_neighbor(x=inputs[0], scale_factor_height=scales[0], scale_factor_width=scales[1],
                                            name=name)
    align = int(p.linearUpsampleMode) == 1
    return mb.upsample_bilinear(x=inputs[0], scale_factor_height=scales[0], scale_factor_width=scales[1],
                                align_corners=align, name=name)


# -- value types: every NeuralNetwork blob is fp32 ------------------------------------------------
# A NeuralNetwork holds float blobs only: comparisons write 1.0/0.0, index outputs (argMax,
# topK, getShape, whereNonZero, ...) write float indices, and index inputs (gather, oneHot, a
# dynamic shape, ...) are floats read as integers. MIL types them (bool, int32); these adapters
# cast at the boundary so that the MIL op sees its declared types and the next layer fp32.


def _fp32(var, name=None):
    from coremltools.converters.mil.mil import types

    if var.dtype == types.fp32:
        return var if name is None else mil_builder().identity(x=var, name=name)
    return mil_builder().cast(x=var, dtype="fp32", **({} if name is None else {"name": name}))


def _int32(var):
    from coremltools.converters.mil.mil import types

    if var.dtype == types.int32:
        return var
    if var.val is not None:  # a constant blob: fold the cast (a shape, an axis, a count)
        return np.asarray(var.val).astype(np.int32)
    return mil_builder().cast(x=var, dtype="int32")


def _bool(var):
    """Truth of a float blob: nonzero (NeuralNetwork.proto's logical layers)."""
    from coremltools.converters.mil.mil import types

    if var.dtype == types.bool:
        return var
    return mil_builder().not_equal(x=var, y=np.float32(0))


@layer("copy")
def _copy(p, inputs, name, _layer):
    return mil_builder().identity(x=inputs[0], name=name)


def _unary_op(op_type):
    def adapter(p, inputs, name, _layer):
        return getattr(mil_builder(), op_type)(x=inputs[0], name=name)

    adapter.__doc__ = f"Elementwise ``{op_type}`` (the layer of the same name, no parameters)."
    return adapter


for _layer_type, _op in {"ceil": "ceil", "floor": "floor", "sign": "sign", "round": "round", "exp2": "exp2",
                         "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
                         "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "atanh": "atanh", "erf": "erf"}.items():
    layer(_layer_type)(_unary_op(_op))


@layer("clampedReLU")
def _clamped_relu(p, inputs, name, _layer):
    """``ClampedReLULayerParams``: ``min(beta, x >= 0 ? x : alpha * x)``, MIL ``clamped_relu``."""
    return mil_builder().clamped_relu(x=inputs[0], alpha=np.float32(p.alpha), beta=np.float32(p.beta), name=name)


def _comparison(op_type, swapped=None):
    """``equal``/``notEqual``/``lessThan``/``lessEqual``/``greaterThan``/``greaterEqual``: two
    inputs, or one input against ``alpha``; the output is 1.0 or 0.0 (a float blob), where MIL's
    comparison gives bool."""

    def adapter(p, inputs, name, _layer):
        mb = mil_builder()
        y = inputs[1] if len(inputs) > 1 else np.float32(p.alpha)
        return _fp32(getattr(mb, op_type)(x=inputs[0], y=y), name=name)

    return adapter


for _layer_type, _op in {"equal": "equal", "notEqual": "not_equal", "lessThan": "less", "lessEqual": "less_equal",
                         "greaterThan": "greater", "greaterEqual": "greater_equal"}.items():
    layer(_layer_type)(_comparison(_op))


def _logical(op_type):
    """``LogicalOr/Xor/Not/AndLayerParams``: inputs are true where nonzero; output 1.0/0.0."""

    def adapter(p, inputs, name, _layer):
        mb = mil_builder()
        args = {"x": _bool(inputs[0])}
        if len(inputs) > 1:
            args["y"] = _bool(inputs[1])
        return _fp32(getattr(mb, op_type)(**args), name=name)

    return adapter


for _layer_type, _op in {"logicalAnd": "logical_and", "logicalOr": "logical_or", "logicalXor": "logical_xor",
                         "logicalNot": "logical_not"}.items():
    layer(_layer_type)(_logical(_op))

layer("modBroadcastable")(_elementwise("mod", None))
layer("floorDivBroadcastable")(_elementwise("floor_div", None))
layer("max")(_elementwise("maximum", None))
layer("min")(_elementwise("minimum", None))


@layer("average")
def _average(p, inputs, name, _layer):
    """``AverageLayerParams``: the mean of the inputs, element by element."""
    mb = mil_builder()
    total = inputs[0]
    for other in inputs[1:]:
        total = mb.add(x=total, y=other)
    return mb.mul(x=total, y=np.float32(1.0 / len(inputs)), name=name)


def _chw_parameter(values, shape, rank):
    """A ``scale``/``bias`` parameter of shape ``[1]``, ``[C]``, ``[1, H, W]`` or ``[C, H, W]``,
    laid out over the last three axes of a rank >= 3 blob (``[C]`` is ``[C, 1, 1]``)."""
    shape = [int(s) for s in shape] or [1]
    values = values.reshape(shape)
    if len(shape) == 1 and rank >= 3:
        values = values.reshape(shape[0], 1, 1)
    return values


@layer("scale")
def _scale(p, inputs, name, _layer):
    """``ScaleLayerParams``: ``x * scale (+ bias)``, each of shape ``[1]``, ``[C]``, ``[1,H,W]``
    or ``[C,H,W]`` over the last three axes."""
    mb = mil_builder()
    rank = len(inputs[0].shape)
    scale = _chw_parameter(weight_values(p.scale), p.shapeScale, rank)
    if not p.hasBias:
        return mb.mul(x=inputs[0], y=scale, name=name)
    bias = _chw_parameter(weight_values(p.bias), p.shapeBias, rank)
    return mb.add(x=mb.mul(x=inputs[0], y=scale), y=bias, name=name)


@layer("bias")
def _bias(p, inputs, name, _layer):
    """``BiasLayerParams``: ``x + bias``, bias of shape ``[1]``, ``[C]``, ``[1,H,W]`` or ``[C,H,W]``."""
    bias = _chw_parameter(weight_values(p.bias), p.shape, len(inputs[0].shape))
    return mil_builder().add(x=inputs[0], y=bias, name=name)


def _arg_reduce(op_type):
    """``ArgMax/ArgMinLayerParams``: ``axis``, ``removeDim`` (MIL ``keep_dims`` is its negation);
    the index is written as a float."""

    def adapter(p, inputs, name, _layer):
        out = getattr(mil_builder(), op_type)(x=inputs[0], axis=int(p.axis), keep_dims=not p.removeDim)
        return _fp32(out, name=name)

    return adapter


layer("argMax")(_arg_reduce("reduce_argmax"))
layer("argMin")(_arg_reduce("reduce_argmin"))


@layer("argSort")
def _arg_sort(p, inputs, name, _layer):
    """``ArgSortLayerParams``: ``descending`` is MIL's ``ascending`` negated; float indices."""
    return _fp32(mil_builder().argsort(x=inputs[0], axis=int(p.axis), ascending=not p.descending), name=name)


@layer("topK")
def _top_k(p, inputs, name, lay):
    """``TopKLayerParams``: values and (float) indices; ``useBottomK`` is MIL's ``ascending``;
    ``K`` from the second input when there is one."""
    k = _int32(inputs[1]) if len(inputs) > 1 else int(p.K)
    if not isinstance(k, int):
        k = int(np.asarray(k).reshape(-1)[0]) if not hasattr(k, "op") else k
    values, indices = mil_builder().topk(x=inputs[0], k=k, axis=int(p.axis), ascending=bool(p.useBottomK))
    return [values, _fp32(indices)]


@layer("cumSum")
def _cum_sum(p, inputs, name, _layer):
    """``CumSumLayerParams``: ``excludeFinalSum`` is MIL's ``exclusive``; the axis from the
    second input when there is one."""
    axis = int(p.axis) if len(inputs) < 2 else int(np.asarray(inputs[1].val).reshape(-1)[0])
    return mil_builder().cumsum(x=inputs[0], axis=axis, exclusive=bool(p.excludeFinalSum), reverse=bool(p.reverse), name=name)


@layer("gather")
def _gather(p, inputs, name, _layer):
    """``GatherLayerParams``: ``data[..., indices, ...]`` along ``axis``, indices read from a float blob."""
    return mil_builder().gather(x=inputs[0], indices=_int32(inputs[1]), axis=int(p.axis), name=name)


@layer("gatherND")
def _gather_nd(p, inputs, name, _layer):
    return mil_builder().gather_nd(x=inputs[0], indices=_int32(inputs[1]), name=name)


@layer("gatherAlongAxis")
def _gather_along_axis(p, inputs, name, _layer):
    return mil_builder().gather_along_axis(x=inputs[0], indices=_int32(inputs[1]), axis=int(p.axis), name=name)


_SCATTER_MODES = ("update", "add", "sub", "mul", "div", "max", "min")  # ScatterMode's order


def _scatter(op_type: str, axis: bool):
    """``Scatter*LayerParams``: inputs (data, indices, updates); ``mode`` as MIL's."""

    def adapter(p, inputs, name, _layer):
        kwargs = {"axis": int(p.axis)} if axis else {}
        return getattr(mil_builder(), op_type)(data=inputs[0], indices=_int32(inputs[1]), updates=inputs[2],
                                       mode=_SCATTER_MODES[int(p.mode)], name=name, **kwargs)

    return adapter


layer("scatter")(_scatter("scatter", axis=True))
layer("scatterND")(_scatter("scatter_nd", axis=False))
layer("scatterAlongAxis")(_scatter("scatter_along_axis", axis=True))


@layer("getShape")
def _get_shape(p, inputs, name, _layer):
    """``GetShapeLayerParams``: the input's shape as a float vector."""
    return _fp32(mil_builder().shape(x=inputs[0]), name=name)


@layer("fillStatic")
def _fill_static(p, inputs, name, _layer):
    return mil_builder().fill(shape=[int(s) for s in p.targetShape], value=np.float32(p.value), name=name)


@layer("fillDynamic")
def _fill_dynamic(p, inputs, name, _layer):
    """``FillDynamicLayerParams``: the shape from the (float) input."""
    return mil_builder().fill(shape=_int32(inputs[0]), value=np.float32(p.value), name=name)


@layer("fillLike")
def _fill_like(p, inputs, name, _layer):
    return mil_builder().fill(shape=mil_builder().shape(x=inputs[0]), value=np.float32(p.value), name=name)


@layer("rangeStatic")
def _range_static(p, inputs, name, _layer):
    return mil_builder().range_1d(end=np.float32(p.endValue), start=np.float32(p.startValue), step=np.float32(p.stepSizeValue),
                          name=name)


@layer("rangeDynamic")
def _range_dynamic(p, inputs, name, _layer):
    """``RangeDynamicLayerParams``: inputs (end), (end, start) or (end, start, step), the
    missing ones from ``startValue``/``stepSizeValue``."""
    start = inputs[1] if len(inputs) > 1 else np.float32(p.startValue)
    step = inputs[2] if len(inputs) > 2 else np.float32(p.stepSizeValue)
    mb = mil_builder()
    return mb.range_1d(end=_scalar(inputs[0]), start=_scalar(start), step=_scalar(step), name=name)


def _scalar(value):
    """A rank-1 one-element blob as the scalar a MIL op expects."""
    if isinstance(value, (np.floating, float)):
        return np.float32(value)
    if value.val is not None:
        return np.float32(np.asarray(value.val).reshape(-1)[0])
    if value.rank == 0:
        return value
    return mil_builder().squeeze(x=mil_builder().reshape(x=value, shape=[1]), axes=[0])


@layer("reshapeDynamic")
def _reshape_dynamic(p, inputs, name, _layer):
    """``ReshapeDynamicLayerParams``: the target shape from the second (float) input."""
    return mil_builder().reshape(x=inputs[0], shape=_int32(inputs[1]), name=name)


@layer("reshapeLike")
def _reshape_like(p, inputs, name, _layer):
    """``ReshapeLikeLayerParams``: to the second input's shape."""
    return mil_builder().reshape(x=inputs[0], shape=mil_builder().shape(x=inputs[1]), name=name)


@layer("rankPreservingReshape")
def _rank_preserving_reshape(p, inputs, name, _layer):
    """``RankPreservingReshapeLayerParams``: ``targetShape`` of the input's rank, where 0 copies
    the input's dimension and -1 is inferred (MIL's iOS15 ``reshape`` has no 0, so copied
    dimensions are read from the input's shape)."""
    mb = mil_builder()
    target = [int(s) for s in p.targetShape]
    x = inputs[0]
    if 0 not in target:
        return mb.reshape(x=x, shape=target, name=name)
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    if not any(is_symbolic(x.shape[i]) for i, s in enumerate(target) if s == 0):
        return mb.reshape(x=x, shape=[int(x.shape[i]) if s == 0 else s for i, s in enumerate(target)], name=name)
    shape = mb.shape(x=x)
    parts = [mb.slice_by_index(x=shape, begin=[i], end=[i + 1]) if s == 0 else np.array([s], np.int32)
             for i, s in enumerate(target)]
    return mb.reshape(x=x, shape=mb.concat(values=parts, axis=0), name=name)


@layer("sliceDynamic")
def _slice_dynamic(p, inputs, name, _layer):
    """``SliceDynamicLayerParams``: inputs (x, begin[, end[, strides]]), the others from the
    parameters; masks as ``sliceStatic``'s."""
    mb = mil_builder()
    begin = _int32(inputs[1])
    end = _int32(inputs[2]) if len(inputs) > 2 else [int(v) for v in p.endIds]
    strides = _int32(inputs[3]) if len(inputs) > 3 else [int(v) for v in p.strides]
    kwargs = {"begin_mask": list(p.beginMasks), "end_mask": list(p.endMasks)}
    if any(p.squeezeMasks):
        kwargs["squeeze_mask"] = list(p.squeezeMasks)
    return mb.slice_by_index(x=inputs[0], begin=begin, end=end, stride=strides, name=name, **kwargs)


@layer("sliceBySize")
def _slice_by_size(p, inputs, name, _layer):
    """``SliceBySizeLayerParams``: ``size`` elements along ``axis`` from the begin input."""
    mb = mil_builder()
    x = inputs[0]
    rank = len(x.shape)
    axis = int(p.axis) % rank
    begin = mb.concat(values=[np.zeros(axis, np.int32), mb.reshape(x=_int32(inputs[1]), shape=[1]),
                              np.zeros(rank - axis - 1, np.int32)], axis=0)
    size = [-1] * rank
    size[axis] = int(p.size)
    return mb.slice_by_size(x=x, begin=begin, size=size, name=name)


@layer("slice")
def _slice(p, inputs, name, _layer):
    """``SliceLayerParams`` (the older layer): ``[startIndex:endIndex:stride]`` along the
    channel, height or width axis (-3, -2, -1 of the blob); a negative ``endIndex`` counts
    from the end."""
    x = inputs[0]
    rank = len(x.shape)
    axis = rank + (-3, -2, -1)[int(p.axis)]
    begin, end, stride = [0] * rank, [0] * rank, [1] * rank
    begin[axis], end[axis], stride[axis] = int(p.startIndex), int(p.endIndex), int(p.stride) or 1
    end_mask = [i != axis for i in range(rank)]
    begin_mask = [i != axis for i in range(rank)]
    return mil_builder().slice_by_index(x=x, begin=begin, end=end, stride=stride, begin_mask=begin_mask, end_mask=end_mask,
                                name=name)


@layer("splitND")
def _split_nd(p, inputs, name, lay):
    """``SplitNDLayerParams``: ``numSplits`` equal parts or ``splitSizes`` along ``axis``."""
    kwargs = {"split_sizes": [int(s) for s in p.splitSizes]} if len(p.splitSizes) else {"num_splits": int(p.numSplits)}
    outs = mil_builder().split(x=inputs[0], axis=int(p.axis), **kwargs)
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


@layer("stack")
def _stack(p, inputs, name, _layer):
    return mil_builder().stack(values=list(inputs), axis=int(p.axis), name=name)


@layer("reverse")
def _reverse(p, inputs, name, _layer):
    """``ReverseLayerParams``: ``reverseDim`` is one flag per axis; MIL lists the axes."""
    return mil_builder().reverse(x=inputs[0], axes=[i for i, flag in enumerate(p.reverseDim) if flag], name=name)


@layer("reverseSeq")
def _reverse_seq(p, inputs, name, _layer):
    return mil_builder().reverse_sequence(x=inputs[0], lengths=_int32(inputs[1]), seq_axis=int(p.sequenceAxis),
                                  batch_axis=int(p.batchAxis), name=name)


@layer("oneHot")
def _one_hot(p, inputs, name, _layer):
    """``OneHotLayerParams``: indices from a float blob; the depth from the second input if any."""
    size = _int32(inputs[1]) if len(inputs) > 1 else int(p.oneHotVectorSize)
    if not isinstance(size, int) and not hasattr(size, "op"):
        size = int(np.asarray(size).reshape(-1)[0])
    return mil_builder().one_hot(indices=_int32(inputs[0]), one_hot_vector_size=size, axis=int(p.axis),
                         on_value=np.float32(p.onValue), off_value=np.float32(p.offValue), name=name)


@layer("matrixBandPart")
def _matrix_band_part(p, inputs, name, _layer):
    return mil_builder().band_part(x=inputs[0], lower=int(p.numLower), upper=int(p.numUpper), name=name)


@layer("whereBroadcastable")
def _where_broadcastable(p, inputs, name, _layer):
    """``WhereBroadcastableLayerParams``: ``cond ? a : b`` with the condition true where nonzero."""
    return mil_builder().select(cond=_bool(inputs[0]), a=inputs[1], b=inputs[2], name=name)


@layer("whereNonZero")
def _where_non_zero(p, inputs, name, _layer):
    """``WhereNonZeroLayerParams``: the (float) coordinates of the nonzero entries."""
    return _fp32(mil_builder().non_zero(x=inputs[0]), name=name)


@layer("embeddingND")
def _embedding_nd(p, inputs, name, _layer):
    """``EmbeddingNDLayerParams``: indices in a last axis of size 1, weights stored
    ``[embeddingSize, vocabSize]`` (transposed, as coremltools' builder writes ``W.T``); the
    output's last axis is ``embeddingSize``: MIL ``gather`` of the untransposed table."""
    mb = mil_builder()
    table = weight_values(p.weights, (int(p.embeddingSize), int(p.vocabSize))).T
    indices = mb.squeeze(x=_int32(inputs[0]), axes=[-1])
    out = mb.gather(x=np.ascontiguousarray(table), indices=indices, axis=0)
    if p.hasBias:
        return mb.add(x=out, y=weight_values(p.bias), name=name)
    return mb.identity(x=out, name=name)


@layer("l2normalize")
def _l2_normalize(p, inputs, name, _layer):
    """``L2NormalizeLayerParams``: over the last three axes (C, H, W) of the blob."""
    rank = len(inputs[0].shape)
    axes = [-3, -2, -1] if rank >= 3 else list(range(-rank, 0))
    return mil_builder().l2_norm(x=inputs[0], axes=axes, epsilon=np.float32(p.epsilon or 1e-6), name=name)


@layer("lrn")
def _lrn(p, inputs, name, _layer):
    """``LRNLayerParams``: across channels (axis -3), MIL ``local_response_norm``."""
    return mil_builder().local_response_norm(x=inputs[0], size=int(p.localSize), alpha=np.float32(p.alpha),
                                     beta=np.float32(p.beta), k=np.float32(p.k or 1.0), name=name)


@layer("mvn")
def _mvn(p, inputs, name, _layer):
    """``MeanVarianceNormalizeLayerParams``: over H, W (each channel plane) or, with
    ``acrossChannels``, over C, H, W: ``x - mean``, divided by ``sqrt(var + epsilon)`` with
    ``normalizeVariance`` (MIL ``layer_norm`` without gamma and beta)."""
    mb = mil_builder()
    axes = [-3, -2, -1] if p.acrossChannels else [-2, -1]
    if p.normalizeVariance:
        return mb.layer_norm(x=inputs[0], axes=axes, epsilon=np.float32(p.epsilon), name=name)
    return mb.sub(x=inputs[0], y=mb.reduce_mean(x=inputs[0], axes=axes, keep_dims=True), name=name)


@layer("layerNormalization")
def _layer_normalization(p, inputs, name, _layer):
    """``LayerNormalizationLayerParams``: over the last ``len(normalizedShape)`` axes."""
    shape = tuple(int(s) for s in p.normalizedShape)
    return mil_builder().layer_norm(x=inputs[0], axes=list(range(-len(shape), 0)), gamma=weight_values(p.gamma, shape),
                            beta=weight_values(p.beta, shape), epsilon=np.float32(p.eps), name=name)


@layer("reorganizeData")
def _reorganize_data(p, inputs, name, _layer):
    """``ReorganizeDataLayerParams``: SPACE_TO_DEPTH, DEPTH_TO_SPACE (channel order as MIL's
    ``space_to_depth``/``depth_to_space``), PIXEL_SHUFFLE (MIL ``pixel_shuffle``)."""
    mb = mil_builder()
    block = int(p.blockSize)
    mode = int(p.mode)
    if mode == 0:
        return mb.space_to_depth(x=inputs[0], block_size=block, name=name)
    if mode == 1:
        return mb.depth_to_space(x=inputs[0], block_size=block, name=name)
    return mb.pixel_shuffle(x=inputs[0], upscale_factor=block, name=name)


_SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS")  # SamplingMode.Method


@layer("resizeBilinear")
def _resize_bilinear(p, inputs, name, _layer):
    """``ResizeBilinearLayerParams``: ``targetSize`` (H, W); the sampling grid's
    STRICT_ALIGN_ENDPOINTS, ALIGN_ENDPOINTS, UPSAMPLE and ROI_ALIGN modes are MIL's
    STRICT_ALIGN_CORNERS, ALIGN_CORNERS, DEFAULT and OFFSET_CORNERS (the backend's own map)."""
    size = [int(s) for s in p.targetSize] or [1, 1]
    return mil_builder().resize_bilinear(x=inputs[0], target_size_height=size[0], target_size_width=size[1],
                                 sampling_mode=_SAMPLING_MODES[int(p.mode.samplingMethod)], name=name)


@layer("crop")
def _crop(p, inputs, name, _layer):
    """``CropLayerParams`` with one input: ``cropAmounts`` (top, bottom) and (left, right) off
    the last two axes. The two-input form (crop to a reference's size) is refused."""
    if len(inputs) > 1:
        raise UnsupportedLayerError("crop with a reference input")
    amounts = [(int(b.startEdgeSize), int(b.endEdgeSize)) for b in p.cropAmounts.borderAmounts] or [(0, 0), (0, 0)]
    return mil_builder().crop(x=inputs[0], crop_height=list(amounts[0]), crop_width=list(amounts[1]), name=name)


@layer("slidingWindows")
def _sliding_windows(p, inputs, name, _layer):
    return mil_builder().sliding_windows(x=inputs[0], axis=int(p.axis), size=int(p.windowSize), stride=int(p.step), name=name)


_PADDING_3D = ("custom", "valid", "same")  # Convolution3DLayerParams.PaddingType / Pooling3DPaddingType


def _padding_3d(p) -> dict:
    """The 3-D layers' ``paddingType``: CUSTOM's front/back, top/bottom, left/right amounts;
    SAME is MIL's ``same`` (the extra padding at the back, bottom and right)."""
    kind = _PADDING_3D[int(p.paddingType)]
    if kind != "custom":
        return {"pad_type": kind}
    pad = [int(p.customPaddingFront), int(p.customPaddingBack), int(p.customPaddingTop), int(p.customPaddingBottom),
           int(p.customPaddingLeft), int(p.customPaddingRight)]
    return {"pad_type": "custom", "pad": pad}


@layer("convolution3d")
def _convolution3d(p, inputs, name, _layer):
    """``Convolution3DLayerParams``: weights ``[outputChannels, inputChannels / nGroups, kD, kH,
    kW]``; a deconvolution's ``[inputChannels, outputChannels / nGroups, kD, kH, kW]`` (both MIL's
    layouts), its ``outputShape`` (D, H, W) checked against what MIL's formula gives."""
    mb = mil_builder()
    groups = int(p.nGroups) or 1
    kernel = (int(p.kernelDepth), int(p.kernelHeight), int(p.kernelWidth))
    kwargs = _padding_3d(p)
    if p.hasBias:
        kwargs["bias"] = weight_values(p.bias)
    strides = [int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1]
    if p.isDeconvolution:
        weight = weight_values(p.weights, (int(p.inputChannels), int(p.outputChannels) // groups, *kernel), axis=1)
        out = mb.conv_transpose(x=inputs[0], weight=weight, groups=groups, strides=strides, name=name, **kwargs)
        wanted = tuple(int(v) for v in p.outputShape) or _short_kernel_same(out, kernel, {**kwargs, "strides": strides})
        if wanted and tuple(out.shape[-3:]) != wanted or _short_kernel_same(out, kernel, {**kwargs, "strides": strides}):
            out = _with_output_shape(out, inputs[0], weight, int(p.outputChannels), wanted, name,
                                     {"groups": groups, "strides": strides, **kwargs})
        return out
    shape = (int(p.outputChannels), int(p.inputChannels) // groups, *kernel)
    return mb.conv(x=inputs[0], weight=weight_values(p.weights, shape), groups=groups,
                      strides=strides, dilations=[int(p.dilationDepth) or 1, int(p.dilationHeight) or 1, int(p.dilationWidth) or 1],
                      name=name, **kwargs)


@layer("pooling3d")
def _pooling3d(p, inputs, name, _layer):
    """``Pooling3DLayerParams``: MAX or AVERAGE over (D, H, W); ``countExcludePadding`` is
    MIL's ``exclude_padding_from_average``."""
    mb = mil_builder()
    kwargs = {"kernel_sizes": [int(p.kernelDepth), int(p.kernelHeight), int(p.kernelWidth)],
              "strides": [int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1], **_padding_3d(p)}
    if kwargs["pad_type"] != "custom":
        kwargs["pad"] = [0] * 6
    if int(p.type) == 1:
        return mb.avg_pool(x=inputs[0], exclude_padding_from_average=bool(p.countExcludePadding), name=name, **kwargs)
    return mb.max_pool(x=inputs[0], name=name, **kwargs)


@layer("globalPooling3d")
def _global_pooling3d(p, inputs, name, _layer):
    """``GlobalPooling3DLayerParams``: MAX or AVERAGE over the last three axes, kept as size 1."""
    fn = mil_builder().reduce_mean if int(p.type) == 1 else mil_builder().reduce_max
    return fn(x=inputs[0], axes=[-3, -2, -1], keep_dims=True, name=name)



_BOX_MODES = ("CORNERS_HEIGHT_FIRST", "CORNERS_WIDTH_FIRST", "CENTER_SIZE_HEIGHT_FIRST", "CENTER_SIZE_WIDTH_FIRST")


@layer("cropResize")
def _crop_resize(p, inputs, name, _layer):
    """``CropResizeLayerParams``: the image blob is rank 5 ``[1, B, C, H, W]`` (coremltools
    expands MIL's rank-4 input), the boxes ``[N, 1, 4 or 5, 1, 1]``; modes as MIL
    ``crop_resize``'s (``SamplingMode`` as in resizeBilinear, ``BoxCoordinatesMode`` by name);
    the output is ``[N, B, C, targetH, targetW]``."""
    mb = mil_builder()
    size = [int(s) for s in p.targetSize] or [1, 1]
    return mb.crop_resize(x=mb.squeeze(x=inputs[0], axes=[0]), roi=inputs[1], target_height=size[0],
                          target_width=size[1], normalized_coordinates=bool(p.normalizedCoordinates),
                          spatial_scale=np.float32(p.spatialScale or 1.0),
                          box_coordinate_mode=_BOX_MODES[int(p.boxIndicesMode.boxMode)],
                          sampling_mode=_SAMPLING_MODES[int(p.mode.samplingMethod)], name=name)


@layer("NonMaximumSuppression")
def _non_maximum_suppression(p, inputs, name, _layer):
    """``NonMaximumSuppressionLayerParams``: boxes ``[B, N, 4]`` and scores ``[B, N, C]`` to
    the kept boxes, their scores, their (float) indices and the (float) count per batch: MIL's
    iOS15 ``non_maximum_suppression``, whose layout is this layer's."""
    boxes, scores, indices, count = mil_builder().non_maximum_suppression(
        boxes=inputs[0], scores=inputs[1], iou_threshold=np.float32(p.iouThreshold),
        score_threshold=np.float32(p.scoreThreshold), max_boxes=int(p.maxBoxes),
        per_class_suppression=bool(p.perClassSuppression))
    return [boxes, scores, _fp32(indices), _fp32(count)]


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


def _all_layers(layers):
    for lay in layers:
        yield lay
        kind = lay.WhichOneof("layer")
        if kind == "loop":
            yield from _all_layers(lay.loop.conditionNetwork.layers)
            yield from _all_layers(lay.loop.bodyNetwork.layers)
        elif kind == "branch":
            yield from _all_layers(lay.branch.ifBranch.layers)
            yield from _all_layers(lay.branch.elseBranch.layers)


def refuse_unknown_layers(network) -> None:
    """Raise :class:`UnsupportedLayerError` naming every layer without an adapter (inside
    loops and branches too)."""
    missing = [(lay.name, lay.WhichOneof("layer")) for lay in _all_layers(network.layers)
               if lay.WhichOneof("layer") not in LAYERS]
    if missing:
        listed = ", ".join(f"{n!r} ({t})" for n, t in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise UnsupportedLayerError(
            f"The emulator cannot execute NeuralNetwork layer(s) {listed}{more}: no adapter for "
            f"{', '.join(sorted({t for _, t in missing}))}. Supported layer types: {', '.join(sorted(LAYERS))}. "
            "Convert for iOS15 or later (an ML program), or run with runtime=coreml on macOS."
        )


def _is_activation(lay, kind: str, linear: tuple | None = None) -> bool:
    if lay.WhichOneof("layer") != "activation" or lay.activation.WhichOneof("NonlinearityType") != kind:
        return False
    return linear is None or (lay.activation.linear.alpha, lay.activation.linear.beta) == linear


def _is_relu6_chain(chain, reads: dict) -> bool:
    """Whether four layers are coremltools' relu6 (``op_mapping.relu6``): ReLU, ``linear(-1, 0)``,
    ``unary`` threshold -6, ``linear(-1, 0)``, each blob read only by the next layer.

    The chain computes ``clip(x, 0, 6)`` with the same bits at any precision: ReLU writes +0 for
    every x <= 0, a negation and a maximum are exact, and ``-(+0) + 0`` is +0 again, which is
    what ``clip`` (max then min, a tie taking the bound) writes too."""
    if len(chain) < 4:
        return False
    relu, negate, floor, back = chain
    if not (_is_activation(relu, "ReLU") and _is_activation(negate, "linear", (-1.0, 0.0))
            and _is_activation(back, "linear", (-1.0, 0.0)) and floor.WhichOneof("layer") == "unary"):
        return False
    unary = floor.unary
    if int(unary.type) != 7 or unary.alpha != -6.0 or unary.scale not in (0.0, 1.0) or unary.shift != 0.0:
        return False
    links = ((relu, negate), (negate, floor), (floor, back))
    return all(len(a.output) == 1 and list(b.input) == [a.output[0]] and reads.get(a.output[0]) == 1 for a, b in links)


def blob_reads(network, outputs) -> dict:
    """How many times each blob is read: by the layers (nested networks included) and as one of
    the model's ``outputs``."""
    reads: dict[str, int] = {}
    for name in [n for lay in _all_layers(network.layers) for n in lay.input] + list(outputs):
        reads[name] = reads.get(name, 0) + 1
    return reads


def _run_layers(layers, values: dict, prefix: str = "", reads: dict | None = None) -> None:
    """Build each layer's MIL op(s) in order, reading and writing ``values`` (NN blob name ->
    MIL var). Ops are named after the blob they write, ``prefix``-ed inside a loop or branch
    (whose blobs may reuse an outer blob's name).

    With ``reads`` (:func:`blob_reads`), a relu6 written as four layers becomes one ``clip``
    computing the same bits (:func:`_is_relu6_chain`): one pass over the tensor, not four."""
    layers = list(layers)
    skip = 0
    for index, lay in enumerate(layers):
        if skip:
            skip -= 1
            continue
        if reads is not None and _is_relu6_chain(layers[index:index + 4], reads) and layers[index + 3].output[0] not in values:
            written = layers[index + 3].output[0]
            values[written] = mil_builder().clip(x=values[lay.input[0]], alpha=np.float32(0), beta=np.float32(6), name=prefix + written)
            skip = 3
            continue
        layer_type = lay.WhichOneof("layer")
        fn = LAYERS[layer_type]
        if getattr(fn, "scoped", False):  # loop, branch: they run nested networks over ``values``
            fn(getattr(lay, layer_type), lay, values, prefix)
            continue
        inputs = [values[n] for n in lay.input]
        name = prefix + (lay.output[0] if len(lay.output) == 1 else lay.name)
        if len(lay.output) == 1 and lay.output[0] in values:  # a blob written again (a loop's state)
            name = f"{name}__{lay.name}"
        out = fn(getattr(lay, layer_type), inputs, name, lay)
        if isinstance(out, (list, tuple)):  # several outputs, named here
            for output_name, var in zip(lay.output, out):
                var.name = prefix + output_name
                values[output_name] = var
        else:
            if out.rank == 0:  # NeuralNetwork.proto has no rank 0: a scalar blob is shape (1,)
                out.op.name = out.name = f"{name}__scalar"
                out = mil_builder().reshape(x=out, shape=[1], name=name)
            values[lay.output[0]] = out


def _written(layers) -> list[str]:
    """Blob names the layers write, nested networks included, in order of first write."""
    names: dict[str, None] = {}
    for lay in layers:
        kind = lay.WhichOneof("layer")
        names.update(dict.fromkeys(lay.output))
        if kind == "loop":
            names.update(dict.fromkeys(_written(lay.loop.conditionNetwork.layers) + _written(lay.loop.bodyNetwork.layers)))
        elif kind == "branch":
            names.update(dict.fromkeys(_written(lay.branch.ifBranch.layers) + _written(lay.branch.elseBranch.layers)))
    return list(names)


def _truth(var):
    """A condition blob (float, shape (1,) or scalar) as the bool scalar MIL's control flow takes."""
    mb = mil_builder()
    var = _bool(var)
    if var.rank:
        var = mb.squeeze(x=mb.reshape(x=var, shape=[1]), axes=[0])
    return var


def _scoped(fn):
    fn.scoped = True
    return fn


@layer("loop")
@_scoped
def _loop(p, lay, values, prefix):
    """``LoopLayerParams``: MIL ``while_loop``. Blobs are global in a NeuralNetwork: the loop's
    state is every blob the body writes that exists before the loop (coremltools copies each
    loop variable into such a blob before the loop and back at the end of the body). The
    ``conditionNetwork`` runs before every iteration and ``conditionVar`` decides; with
    ``maxLoopIterations`` > 0 a counter bounds the iterations too (alone when there is no
    condition network). ``loopBreak``/``loopContinue`` have no adapter."""
    mb = mil_builder()
    state = [n for n in _written(p.bodyNetwork.layers) if n in values]
    counted = int(p.maxLoopIterations) > 0
    conditional = len(p.conditionNetwork.layers) > 0 or bool(p.conditionVar)
    inner = f"{prefix}{lay.name}/"
    initial = [values[n] for n in state] + ([np.int32(0)] if counted else [])

    def scope(loop_vars):
        local = dict(values)
        local.update(zip(state, loop_vars))
        return local

    def cond(*loop_vars):
        local = scope(loop_vars)
        truth = None
        if conditional:
            _run_layers(p.conditionNetwork.layers, local, inner + "cond/")
            truth = _truth(local[p.conditionVar])
        if counted:
            below = mb.less(x=loop_vars[-1], y=np.int32(p.maxLoopIterations))
            truth = below if truth is None else mb.logical_and(x=truth, y=below)
        return truth

    def body(*loop_vars):
        local = scope(loop_vars)
        _run_layers(p.bodyNetwork.layers, local, inner + "body/")
        out = [mb.identity(x=local[n]) for n in state]
        return out + ([mb.add(x=loop_vars[-1], y=np.int32(1))] if counted else [])

    if not state and not counted:
        raise UnsupportedLayerError(f"loop {lay.name!r} without state or iteration count")
    results = mb.while_loop(_cond=cond, _body=body, loop_vars=tuple(initial), name=prefix + lay.name)
    values.update(zip(state, results if isinstance(results, (list, tuple)) else [results]))


@layer("branch")
@_scoped
def _branch(p, lay, values, prefix):
    """``BranchLayerParams``: MIL ``cond`` on the input blob (true where nonzero). Its outputs
    are the blobs the branches write that exist before it or that both branches write
    (coremltools copies each branch result into the same blob in both). A condition computed
    from constants alone builds only the branch taken: the other may not even be typable (the
    list growth coremltools writes for a TensorArray whose size is known concatenates blobs of
    different ranks there)."""
    mb = mil_builder()
    if_written, else_written = _written(p.ifBranch.layers), _written(p.elseBranch.layers)
    outputs = [n for n in if_written if n in else_written or n in values]
    outputs += [n for n in else_written if n in values and n not in outputs]
    inner = f"{prefix}{lay.name}/"

    def branch(network, tag):
        def build():
            local = dict(values)
            _run_layers(network.layers, local, inner + tag)
            return tuple(mb.identity(x=local[n]) for n in outputs)

        return build

    pred = _truth(values[lay.input[0]])
    if pred.val is not None:  # known at load time: only the branch that runs is built, as the runtime runs it
        taken, tag = (p.ifBranch, "if/") if bool(pred.val) else (p.elseBranch, "else/")
        _run_layers(taken.layers, values, inner + tag)
        return
    results = mb.cond(pred=pred, _true_fn=branch(p.ifBranch, "if/"),
                      _false_fn=branch(p.elseBranch, "else/"), name=prefix + lay.name)
    results = results if isinstance(results, (list, tuple)) else [results]
    values.update(zip(outputs, results))


def nn_program(spec, compute_units: str = "cpu_only", fuse: bool = True):
    """The MIL program of a NeuralNetwork ``spec`` (see the module docstring), typed for
    ``compute_units`` (:func:`typed_for_units`); ``fuse=False`` builds every layer as written,
    without the bit-preserving fusions of :func:`_run_layers`."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Function, Program, types
    from coremltools.converters.mil.mil.program import get_new_symbol

    kind = spec.WhichOneof("Type")
    network = getattr(spec, kind)
    refuse_unknown_layers(network)
    mb = mil_builder()
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
        read_out = [o.name for o in spec.description.output] + [getattr(network, "labelProbabilityLayerName", "")]
        _run_layers(network.layers, values, reads=blob_reads(network, read_out) if fuse else None)
        outputs = _outputs(mb, spec, kind, network, values)
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    return typed_for_units(program, compute_units)


def typed_for_units(program, compute_units: str):
    """``program`` (built fp32) as ``compute_units`` compute it: unchanged on the CPU alone; the
    GPU and the Neural Engine compute a NeuralNetwork in fp16, so there coremltools'
    ``FP16ComputePrecision`` types it fp16 (inputs, outputs and ``classify`` stay fp32)."""
    import coremltools as ct

    if compute_units != "cpu_only":
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

        ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type != "classify")(program)
        PASS_REGISTRY["common::cast_optimization"](program)  # one cast per input
        for function in program.functions.values():
            _fold_constant_casts(function)
        PASS_REGISTRY["common::dead_code_elimination"](program)
    return program


def _fold_constant_casts(block) -> None:
    """Replace each ``cast`` of a constant with the cast constant (numpy's rounding, as the
    emulator folds it at compile time anyway), so the fp32 weights leave the program before
    it is compiled. Only casts: other constant ops stay for the compile, which folds them with
    their kernels."""
    from coremltools.converters.mil.mil import Builder as mb

    with block:
        for op in list(block.operations):
            for nested in op.blocks:
                _fold_constant_casts(nested)
            if op.op_type != "cast" or op.x.op is None or op.x.op.op_type != "const" or op.outputs[0].val is None:
                continue
            folded = mb.const(val=op.outputs[0].val, before_op=op, name=op.outputs[0].name)
            if op.enclosing_block.try_replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=folded):
                op.outputs[0].set_name(op.outputs[0].name + "_folded")


def _outputs(mb, spec, kind, network, values) -> list:
    """The program outputs: a classifier's ``classify`` (label, probabilities), else the
    spec's outputs by name."""
    description = spec.description
    if kind != "neuralNetworkClassifier":
        # an output written by a loop or branch is one of its results: name it as the spec does
        return [values[o.name] if values[o.name].name == o.name else mb.identity(x=values[o.name], name=o.name)
                for o in description.output]
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


from precision_sweep.emulator import nn_recurrent  # noqa: E402,F401  registers the recurrent layers
