"""Test models with a known precision problem in a known Keras layer.

``overflow_model``: a trained digits CNN whose layer ``hot`` is scaled up so its activations
peak near 4e5 (fp16 ends at 65504) and the next layer ``cool`` scaled down by the same factor:
ReLU is positively homogeneous, so the FP32 function is unchanged.
``int8_sensitive_model``: the same CNN whose ``dense`` kernel gets one outlier row on an input
feature that is (nearly) always zero: the FP32 function barely moves, but per-channel int8
scales become so coarse that the layer's other weights quantize to zero.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.data.models import LoadedModel
from precision_sweep.hashing import hash_arrays


def digits_data():
    from sweep_testing import compose
    from precision_sweep.data import load_dataset

    return load_dataset(compose().dataset)


def _trained(dataset, name: str, epochs: int = 8):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(dataset.x_train.shape[1:], name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="hot")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="cool")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(dataset.n_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(dataset.x_train, dataset.y_train.astype(np.int32), epochs=epochs, batch_size=64, verbose=0)
    return model


def _loaded(model) -> LoadedModel:
    return LoadedModel(
        name=model.name,
        keras_model=model,
        input_name="image",
        input_shape=tuple(int(d) for d in model.inputs[0].shape[1:]),
        outputs_are="probabilities",
        content_hash=hash_arrays(model.get_weights(), extra=model.to_json()),
    )


def overflow_model(dataset, peak: float = 4e5) -> LoadedModel:
    """Scale ``hot`` so its largest activation on the train split is about ``peak``."""
    import keras

    model = _trained(dataset, "overflow_cnn")
    hot = keras.Model(model.inputs[0], model.get_layer("hot").output)(dataset.x_train[:512])
    scale = peak / float(np.max(hot))
    kernel, bias = model.get_layer("hot").get_weights()
    # Weights above 65504 would make coremltools keep the op in fp32 by itself.
    assert np.abs(kernel).max() * scale < 65504 and np.abs(bias).max() * scale < 65504
    model.get_layer("hot").set_weights([kernel * scale, bias * scale])
    kernel, bias = model.get_layer("cool").get_weights()
    model.get_layer("cool").set_weights([kernel / scale, bias])
    return _loaded(model)


def int8_sensitive_model(dataset, factor: float = 200.0) -> LoadedModel:
    import keras

    model = _trained(dataset, "int8_cnn")
    features = keras.Model(model.inputs[0], model.get_layer("flatten").output)(dataset.x_train[:512])
    quiet = int(np.argmin(np.abs(np.asarray(features)).mean(axis=0)))
    kernel, bias = model.get_layer("dense").get_weights()
    kernel[quiet, :] = factor * np.abs(kernel).max()
    model.get_layer("dense").set_weights([kernel, bias])
    return _loaded(model)
