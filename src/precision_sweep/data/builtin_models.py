"""Builtin models trained at first use on the dataset's train split (seeded, seconds)."""

from __future__ import annotations

import numpy as np


def digits_cnn(dataset, epochs: int, seed: int):
    """A small Keras CNN for the 8x8 digits. Reaches test accuracy >= 0.95 in a few seconds."""
    import keras

    keras.utils.set_random_seed(seed)
    height, width, channels = dataset.x_train.shape[1:]
    inputs = keras.Input((height, width, channels), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(dataset.n_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        dataset.x_train,
        dataset.y_train.astype(np.int32),
        epochs=epochs,
        batch_size=64,
        verbose=0,
        shuffle=True,
    )
    return model


def mobilenet_v2(dataset, epochs: int, seed: int):
    """MobileNetV2 (alpha 0.35) with seeded random weights, untrained (``epochs`` is unused):
    a real architecture for conversion, size and agreement checks, not for accuracy."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(dataset.x_train.shape[1:], name="image")
    return keras.applications.MobileNetV2(
        input_tensor=inputs, alpha=0.35, weights=None, classes=dataset.n_classes, name="mobilenet_v2"
    )


BUILDERS = {"digits_cnn": digits_cnn, "mobilenet_v2": mobilenet_v2}
