"""The conversion doctor on real coremltools failures: layer, TF op, what is known, the fix."""

from __future__ import annotations

import pytest

from byo_helpers import grouped_conv, keras3_gru, random_samples, write_npz
from sweep_testing import mlflow_client, run_cli


def _convert_error(model) -> Exception:
    import coremltools as ct

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    try:
        ct.convert(
            model, source="tensorflow", convert_to="milinternal",
            inputs=[ct.TensorType(name=model.inputs[0].name, shape=(1, *shape))],
            minimum_deployment_target=ct.target.iOS16, pass_pipeline=ct.PassPipeline.EMPTY,
        )
    except Exception as exc:  # noqa: BLE001
        return exc
    pytest.fail("coremltools converted a model it is known to refuse; update the doctor")


def _explain(model) -> str:
    from precision_sweep.convert.doctor import ConversionError, explain_conversion_error
    from precision_sweep.errors import UserInputError

    explained = explain_conversion_error(_convert_error(model), model)
    assert isinstance(explained, ConversionError) and isinstance(explained, UserInputError)
    return str(explained)


def test_keras3_recurrent_layers_say_unroll_or_tf_keras():
    message = _explain(keras3_gru())
    assert "layer 'gru' (GRU)" in message
    assert "unroll=True" in message and "model=tf_keras" in message


def test_grouped_conv_names_the_layer_and_the_depthwise_rewrite():
    message = _explain(grouped_conv(channels=4))
    assert "layer 'gconv' (Conv2D)" in message and "'StatefulPartitionedCall'" in message
    assert "groups=4" in message and "DepthwiseConv2D" in message


def test_lambda_with_an_unsupported_op():
    import keras
    import tensorflow as tf

    inputs = keras.Input((6,), name="feat")
    x = keras.layers.Lambda(lambda t: tf.math.bessel_i0e(t), name="bessel")(inputs)
    message = _explain(keras.Model(inputs, keras.layers.Dense(3, name="probs")(x)))
    assert "layer 'bessel' (Lambda)" in message and "'BesselI0e'" in message
    assert "safe_mode" in message


def test_unsupported_op_in_a_custom_layer():
    import keras
    import tensorflow as tf

    class Bessel(keras.layers.Layer):
        def call(self, t):
            return tf.math.bessel_i1e(t)

    inputs = keras.Input((6,), name="feat")
    x = Bessel(name="bessel_layer")(inputs)
    message = _explain(keras.Model(inputs, keras.layers.Dense(3, name="probs")(x)))
    assert "layer 'bessel_layer' (Bessel)" in message and "'BesselI1e'" in message
    assert "has no conversion" in message and "register_tf_op" in message


def test_user_errors_pass_through_unchanged():
    from precision_sweep.convert.doctor import explain_conversion_error
    from precision_sweep.errors import SkipJob, UserInputError

    for exc in (UserInputError("x"), SkipJob("y"), KeyboardInterrupt()):
        assert explain_conversion_error(exc, None) is exc


@pytest.mark.slow
def test_sweep_records_the_explanation_and_goes_on(tmp_path):
    grouped_conv(channels=4).save(tmp_path / "grouped.keras")
    data = write_npz(tmp_path / "d.npz", *random_samples(8, (8, 8, 4), 3))
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp32,fp16", "target=ios16", "runtime.progress=false",
         "model=keras", f"model.path={tmp_path / 'grouped.keras'}", "dataset=npz", f"dataset.path={data}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "2 of 2 job(s) failed" in result.stderr
    client = mlflow_client(tmp_path / "outputs")
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(children) == 2 and all(r.info.status == "FAILED" for r in children)
    assert all(r.info.status != "RUNNING" for r in runs)
    for run in children:
        assert run.data.tags["error_class"] == "ConversionError"
        text = open(client.download_artifacts(run.info.run_id, "error.txt")).read()
        assert text.startswith("ConversionError:") and "DepthwiseConv2D" in text and "'gconv'" in text
