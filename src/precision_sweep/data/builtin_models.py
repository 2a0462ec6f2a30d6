"""Builtin models trained at first use on the dataset's train split (seeded, seconds)."""

from __future__ import annotations

import numpy as np


def _trained(model, dataset, epochs: int):
    """``model`` fitted to the dataset's train split (Adam, sparse cross-entropy, batch 64)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(dataset.x_train, dataset.y_train.astype(np.int32), epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return model


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
    return _trained(model, dataset, epochs)


def digits_mlp_sensitive(dataset, epochs: int, seed: int):
    """An MLP for the 8x8 digits whose layers need different precisions: the demo where
    per-layer precision matters (test accuracy about 0.97).

    ``project`` (a linear 64 -> 16 projection) passes the whole image on in 16 values, and
    ``probs`` reads the decision from the 16 of ``squeeze``: nothing redundant absorbs a
    coarse weight, so each loses accuracy at 2-bit palettization (4 weight values per
    tensor). ``wide2`` (512 x 512, nine tenths of the weights) sits between two dropout layers,
    which train it to spread every feature over many units: it keeps its accuracy at 2 bits.
    So uniform 2-bit fails a 1 pp budget, while 2 bits on ``wide2`` and 8 on the rest meets it
    at about two thirds of the size of the smallest uniform recipe that does (4-bit).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(dataset.x_train.shape[1:], name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(16, name="project")(x)
    x = keras.layers.Dense(512, activation="relu", name="wide1")(x)
    x = keras.layers.Dropout(0.3, name="drop1")(x)
    x = keras.layers.Dense(512, activation="relu", name="wide2")(x)
    x = keras.layers.Dropout(0.3, name="drop2")(x)
    x = keras.layers.Dense(16, activation="relu", name="squeeze")(x)
    outputs = keras.layers.Dense(dataset.n_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="digits_mlp_sensitive")
    return _trained(model, dataset, epochs)


def mobilenet_v2(dataset, epochs: int, seed: int):
    """MobileNetV2 (alpha 0.35) with seeded random weights, untrained (``epochs`` is unused):
    a real architecture for conversion, size and agreement checks, not for accuracy."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(dataset.x_train.shape[1:], name="image")
    return keras.applications.MobileNetV2(
        input_tensor=inputs, alpha=0.35, weights=None, classes=dataset.n_classes, name="mobilenet_v2"
    )


BUILDERS = {"digits_cnn": digits_cnn, "digits_mlp_sensitive": digits_mlp_sensitive, "mobilenet_v2": mobilenet_v2}
