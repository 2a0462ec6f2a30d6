"""Issue 15: the TensorFlow entry points of the new kernels, and the new ops under every profile.

Each TF op is wrapped in a ``tf.function``, converted with coremltools (``mlprogram``, fp32) and
run through the emulator; the result must match TF at fp32 and the program must hold the MIL op
the frontend maps the TF op to. Where coremltools 9 cannot convert a case, the test asserts the
converter's own error. ``resample`` has no TF entry point here: the frontend maps only
``Addons>Resampler`` (TensorFlow Addons) to it.

The profile tests run a one-op program of each new op, converted at fp32 and fp16, under
``cpu_only``, ``cpu_and_gpu`` and ``all`` (M1 and M5 engines), and check the op's output has the
declared dtype and agrees with the fp32 CPU run (fp16: within fp16 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
ct = pytest.importorskip("coremltools")

import _emu_helpers as H
from coremltools.converters.mil import Builder as mb

from precision_sweep.emulator import Emulator

IOS15, IOS16, IOS17 = ct.target.iOS15, ct.target.iOS16, ct.target.iOS17
RNG = np.random.default_rng(150)
PROFILES = (("cpu_only", "m1"), ("cpu_and_gpu", "m1"), ("all", "m1"), ("all", "m5"))  # m5: the ANE runs the image ops


def convert_tf(fn, shapes, target=IOS16):
    """Convert ``fn`` (a function of float32 tensors of ``shapes``) to an fp32 ML program."""
    H.quiet()
    specs = [tf.TensorSpec(s, tf.float32, name=f"input_{i}") for i, s in enumerate(shapes)]
    concrete = tf.function(fn).get_concrete_function(*specs)
    return ct.convert([concrete], source="tensorflow", convert_to="mlprogram", minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT32)


def emulate_against_tf(fn, feeds, target, mil_op, rtol=1e-5):
    """Convert, run under the emulator, compare with TF; returns the emulator output."""
    mlmodel = convert_tf(fn, [f.shape for f in feeds], target)
    emulator = Emulator(mlmodel, compute_units="cpu_only")
    assert mil_op in emulator.op_types(), sorted(emulator.op_types())
    out = emulator.predict({name: f for name, f in zip(emulator.input_names, feeds)})
    got = out[emulator.output_names[0]]
    want = np.asarray(fn(*[tf.constant(f) for f in feeds]))
    assert got.shape == want.shape, (got.shape, want.shape)
    if np.issubdtype(want.dtype, np.integer):
        np.testing.assert_array_equal(got, want)
    else:
        H.assert_matches_tf(got, want, rtol=rtol, top1=False)
    return got


# ---------------------------------------------------------------- tf.image.crop_and_resize
CROP_BOXES = np.array([[0.1, 0.2, 0.8, 0.9], [0.5, -0.2, 1.3, 0.6], [0.9, 0.9, 0.1, 0.2], [0.3, 0.3, 0.3, 0.7]],
                      np.float32)


def _crop_and_resize(batch, extrapolation):
    indices = np.arange(len(CROP_BOXES), dtype=np.int32) % batch
    return lambda x: tf.image.crop_and_resize(x, CROP_BOXES, indices, [4, 5], extrapolation_value=extrapolation)


@pytest.mark.parametrize("target,batch,extrapolation", [(IOS17, 2, 2.5), (IOS17, 1, 0.0), (IOS16, 1, 2.5), (IOS15, 1, 0.0)])
def test_tf_crop_and_resize_converts_to_crop_resize(target, batch, extrapolation):
    x = RNG.standard_normal((batch, 6, 7, 3)).astype(np.float32)
    emulate_against_tf(_crop_and_resize(batch, extrapolation), [x], target, "crop_resize")


@pytest.mark.parametrize("target,batch", [(IOS17, 2), (IOS16, 1)])
def test_tf_crop_and_resize_with_boxes_as_inputs(target, batch):
    """Boxes and box indices fed at run time (iOS16: the frontend builds the roi in the program)."""
    H.quiet()
    fn = lambda x, b, i: tf.image.crop_and_resize(x, b, i, [3, 4], extrapolation_value=-1.0)
    shapes = [((batch, 6, 7, 3), tf.float32), ((5, 4), tf.float32), ((5,), tf.int32)]
    specs = [tf.TensorSpec(s, d, name=f"input_{k}") for k, (s, d) in enumerate(shapes)]
    inputs = [ct.TensorType(name=f"input_{k}", shape=s, **({"dtype": np.int32} if d == tf.int32 else {}))
              for k, (s, d) in enumerate(shapes)]
    concrete = tf.function(fn).get_concrete_function(*specs)
    mlmodel = ct.convert([concrete], source="tensorflow", convert_to="mlprogram", minimum_deployment_target=target,
                         compute_precision=ct.precision.FLOAT32, inputs=inputs)
    feeds = [RNG.standard_normal((batch, 6, 7, 3)).astype(np.float32), RNG.uniform(-0.2, 1.2, (5, 4)).astype(np.float32),
             (np.arange(5) % batch).astype(np.int32)]
    emulator = Emulator(mlmodel, compute_units="cpu_only")
    assert "crop_resize" in emulator.op_types()
    (got,) = emulator.predict(dict(zip(emulator.input_names, feeds))).values()
    H.assert_matches_tf(got, fn(*feeds).numpy(), rtol=1e-5, top1=False)


def test_tf_crop_and_resize_before_ios17_fails_to_convert_a_batch():
    """iOS15/16 ``crop_resize`` type inference gives (N, B, C, h, w) for an indexed roi, so the
    frontend's squeeze of axis 1 fails for B > 1 (coremltools 9)."""
    with pytest.raises(ValueError, match="perm should have the same length as rank"):
        convert_tf(_crop_and_resize(2, 0.0), [(2, 6, 7, 3)], IOS16)


def test_tf_crop_and_resize_ios15_refuses_extrapolation_value():
    with pytest.raises(ValueError, match="only extrapolation_value=0.0 is supported"):
        convert_tf(_crop_and_resize(1, 2.5), [(1, 6, 7, 3)], IOS15)


# ---------------------------------------------------------------- tf.image.non_max_suppression
def _nms(max_out, iou, score):
    return lambda boxes, scores: tf.image.non_max_suppression(boxes, scores, max_out, iou_threshold=iou,
                                                              score_threshold=score)


@pytest.mark.parametrize("iou,score", [(0.3, 0.1), (0.6, 0.5), (0.1, float("-inf"))])
def test_tf_non_max_suppression_converts_to_nms(iou, score):
    corners = RNG.uniform(0, 1, (24, 4)).astype(np.float32)  # any diagonal pair, as TF allows
    scores = RNG.uniform(0, 1, 24).astype(np.float32)
    emulate_against_tf(_nms(6, iou, score), [corners, scores], IOS16, "non_maximum_suppression")


def test_tf_non_max_suppression_ios17_fails_to_convert():
    """The frontend passes ``score_threshold``, which iOS17's op no longer has (coremltools 9)."""
    with pytest.raises(ValueError, match="Unknown input 'score_threshold'"):
        convert_tf(_nms(6, 0.3, 0.1), [(24, 4), (24,)], IOS17)


# ---------------------------------------------------------------- tf.where(cond)
@pytest.mark.parametrize("target", [IOS16, IOS17])
@pytest.mark.parametrize("threshold", [0.3, 2.0])
def test_tf_where_one_argument_converts_to_non_zero(target, threshold):
    x = RNG.uniform(0, 1, (3, 4, 5)).astype(np.float32)
    got = emulate_against_tf(lambda x: tf.where(x > threshold), [x], target, "non_zero")
    assert got.shape[1] == 3  # (count, rank); count 0 when nothing passes


# ---------------------------------------------------------------- space_to_batch_nd / batch_to_space_nd
@pytest.mark.parametrize("target", [IOS16, IOS17])
@pytest.mark.parametrize("shape,block,pads", [((2, 6, 7, 3), [2, 3], [[1, 1], [2, 0]]), ((2, 6, 6, 3), [2, 2], [[0, 0], [0, 0]])])
def test_tf_space_to_batch_nd_converts_to_space_to_batch(target, shape, block, pads):
    x = RNG.standard_normal(shape).astype(np.float32)
    emulate_against_tf(lambda x: tf.space_to_batch_nd(x, block, pads), [x], target, "space_to_batch")


@pytest.mark.parametrize("target", [IOS16, IOS17])
@pytest.mark.parametrize("block,crops", [([2, 3], [[1, 1], [2, 0]]), ([2, 2], [[0, 0], [0, 0]])])
def test_tf_batch_to_space_nd_converts_to_batch_to_space(target, block, crops):
    x = RNG.standard_normal((2 * block[0] * block[1], 4, 3, 3)).astype(np.float32)
    emulate_against_tf(lambda x: tf.batch_to_space(x, block, crops), [x], target, "batch_to_space")


# ---------------------------------------------------------------- image transforms: affine
def _projective(transforms, output_shape, fill=0.0, interpolation="BILINEAR"):
    matrix = tf.constant(np.asarray(transforms, np.float32))
    return lambda x: tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=matrix, output_shape=tf.constant(output_shape),
                                                           fill_value=fill, interpolation=interpolation,
                                                           fill_mode="CONSTANT")


@pytest.mark.parametrize("target", [IOS16, IOS17])
@pytest.mark.parametrize("transforms,output_shape", [
    ([[0.9, 0.2, 0.5, -0.1, 1.1, -0.3, 0, 0]], [5, 8]),
    ([[1, 0, 1.5, 0, 1, -2.0, 0, 0], [0.7, -0.3, 2.0, 0.4, 0.8, 0.0, 0, 0]], [6, 7]),
])
def test_tf_image_projective_transform_converts_to_affine(target, transforms, output_shape):
    x = RNG.standard_normal((2, 6, 7, 3)).astype(np.float32)
    emulate_against_tf(_projective(transforms, output_shape), [x], target, "affine")


@pytest.mark.parametrize("kwargs,message", [
    ({"transforms": [[1, 0, 0, 0, 1, 0, 0.01, 0]]}, "non-zero c0 or c1 is not supported"),
    ({"transforms": [[1, 0, 0, 0, 1, 0, 0, 0]], "fill": 1.0}, "Only fill_value = 0.0 is supported"),
    ({"transforms": [[1, 0, 0, 0, 1, 0, 0, 0]], "interpolation": "NEAREST"}, "Only interpolation = BILINEAR"),
])
def test_tf_image_projective_transform_converter_refusals(kwargs, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        convert_tf(_projective(output_shape=[6, 7], **kwargs), [(1, 6, 7, 3)], IOS16)


def test_resample_has_no_entry_point_in_core_tensorflow():
    """The frontend maps only TensorFlow Addons' resampler to ``resample`` (``Resampler``,
    ``Addons>Resampler``), and core TensorFlow has no such op: no TF model without Addons
    converts to it."""
    import inspect

    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY

    mapped = sorted(name for name, fn in _TF_OPS_REGISTRY.items() if "mb.resample(" in inspect.getsource(fn))
    assert mapped == ["Addons>Resampler", "Resampler"]
    assert not any(hasattr(tf.raw_ops, name.split(">")[-1]) for name in mapped)


# ---------------------------------------------------------------- every new op under every profile
IMG = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
PROFILE_PROGRAMS = {
    "crop_resize_ios16": (IOS16, {"x": IMG}, lambda x: mb.crop_resize(
        x=x, roi=np.array([[0, 0.5, 0.5, 4, 5], [1, 1, 0, 5, 3]], np.float32).reshape(2, 1, 5, 1, 1), target_height=3,
        target_width=4, sampling_mode="ALIGN_CORNERS", pad_value=np.float32(1.0))),
    "crop_resize_ios17": (IOS17, {"x": IMG}, lambda x: mb.crop_resize(
        x=x, boxes=np.array([[0.1, 0.1, 0.9, 0.8], [0.2, 0.0, 0.5, 1.2]], np.float32),
        box_indices=np.array([1, 0], np.int32), target_height=3, target_width=4, normalized_coordinates=True,
        sampling_mode="UNALIGN_CORNERS")),
    "affine": (IOS16, {"x": IMG, "m": np.array([[0.9, 0.1, 0.05, -0.2, 1.1, 0.1]], np.float32)}, lambda x, m: mb.affine(
        x=x, transform_matrix=m, output_height=5, output_width=7, sampling_mode="bilinear", padding_mode="constant",
        padding_value=np.float32(0.0), coordinates_mode="normalized_minus_one_to_one", align_corners=True)),
    "resample": (IOS16, {"x": IMG, "c": RNG.uniform(-1.2, 1.2, (2, 4, 5, 2)).astype(np.float32)}, lambda x, c: mb.resample(
        x=x, coordinates=c, sampling_mode="bilinear", padding_mode="reflection", padding_value=np.float32(0.0),
        coordinates_mode="normalized_minus_one_to_one", align_corners=False)),
    "space_to_batch": (IOS16, {"x": IMG}, lambda x: mb.space_to_batch(x=x, block_shape=[2, 3], paddings=[[1, 1], [0, 0]])),
    "batch_to_space": (IOS16, {"x": IMG}, lambda x: mb.batch_to_space(x=x, block_shape=[2, 1], crops=[[1, 0], [0, 2]])),
    "non_zero": (IOS16, {"x": IMG}, lambda x: mb.non_zero(x=mb.relu(x=x))),
    "non_maximum_suppression_ios15": (IOS16, {"b": RNG.uniform(0, 5, (1, 12, 4)).astype(np.float32),
                                              "s": RNG.uniform(0, 1, (1, 12, 3)).astype(np.float32)},
                                      lambda b, s: mb.non_maximum_suppression(boxes=b, scores=s,
                                                                               iou_threshold=np.float32(0.3),
                                                                               score_threshold=np.float32(0.2),
                                                                               max_boxes=5)),
    "non_maximum_suppression_ios17": (IOS17, {"b": RNG.uniform(0, 5, (1, 4, 12)).astype(np.float32),
                                              "s": RNG.uniform(0, 1, (1, 3, 12)).astype(np.float32)},
                                      lambda b, s: mb.non_maximum_suppression(boxes=b, scores=s,
                                                                               iou_threshold=np.float32(0.3),
                                                                               max_boxes=5, per_class_suppression=True)),
}


def _profile_model(name, precision):
    opset, inputs, build = PROFILE_PROGRAMS[name]
    prog = H.mil_program(build, inputs, opset)
    H.quiet()
    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=opset, compute_precision=precision), inputs


def _declared_dtypes(mlmodel) -> dict[str, np.dtype]:
    """The dtype the converted program declares for each op output, by name."""
    from coremltools.converters.mil.mil import types

    return {var.name: np.dtype(types.nptype_from_builtin(var.dtype))
            for op in mlmodel._mil_program.functions["main"].operations for var in op.outputs}


@pytest.mark.parametrize("name", sorted(PROFILE_PROGRAMS))
def test_new_ops_run_under_every_profile_in_the_declared_dtype(name):
    op_type = name.rsplit("_ios", 1)[0]
    reference = None
    for precision, float_dtype in ((ct.precision.FLOAT32, np.float32), (ct.precision.FLOAT16, np.float16)):
        mlmodel, inputs = _profile_model(name, precision)
        declared = _declared_dtypes(mlmodel)
        for units, device in PROFILES:
            emulator = Emulator(mlmodel, compute_units=units, device=device)
            feeds = dict(zip(emulator.input_names, inputs.values()))
            outputs, intermediates = emulator.predict(feeds, capture=True)
            produced = {name: v for name, (t, v) in intermediates.items() if t == op_type}
            assert produced, f"{op_type} did not run ({units}, {precision})"
            # Each output in the dtype the program declares for it, and the declared float outputs
            # in the precision converted to (non_zero has only its int32 indices).
            assert {name: v.dtype for name, v in produced.items()} == {name: declared[name] for name in produced}
            floats = {declared[name] for name in produced if np.issubdtype(declared[name], np.floating)}
            assert floats == ({np.dtype(float_dtype)} if op_type != "non_zero" else set()), floats
            values = [np.asarray(outputs[n], np.float64) for n in emulator.output_names]
            if reference is None:
                reference = values
                continue
            tol = 1e-6 if float_dtype == np.float32 else 2e-2
            for got, want in zip(values, reference):
                if op_type in ("non_zero", "non_maximum_suppression") and float_dtype == np.float16:
                    continue  # selections may flip on fp16 rounding; dtype and execution are checked above
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max(initial=0)))


# ---------------------------------------------------------------- fill with a symbolic shape
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tf_fill_with_a_dynamic_batch_from_a_saved_package(precision, tmp_path):
    """``tf.fill([tf.shape(x)[0], 3], v)`` converts to ``shape -> slice -> concat -> fill``; the
    package is saved with a flexible batch and run at several batch sizes on every profile."""
    H.quiet()
    fn = lambda x: x * tf.fill([tf.shape(x)[0], 3], 3.0) + tf.fill(tf.shape(x), 0.5)
    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec((None, 3), tf.float32, name="input_0"))
    prec = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    mlmodel = ct.convert([concrete], source="tensorflow", convert_to="mlprogram", minimum_deployment_target=IOS16,
                         compute_precision=prec, inputs=[ct.TensorType(name="input_0", shape=(ct.RangeDim(1, 16), 3))])
    path = tmp_path / "fill.mlpackage"
    mlmodel.save(str(path))
    for units, device in PROFILES:
        emulator = Emulator(str(path), compute_units=units, device=device)
        assert "fill" in emulator.op_types()
        for batch in (1, 5, 16):
            x = RNG.uniform(-1, 1, (batch, 3)).astype(np.float32)
            (got,) = emulator.predict({emulator.input_names[0]: x}).values()
            np.testing.assert_allclose(got, fn(tf.constant(x)).numpy(), rtol=1e-6 if precision == "fp32" else 2e-3, atol=2e-3)
