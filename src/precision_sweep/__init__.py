"""precision-sweep: measure how Core ML precisions change a TF/Keras model's predictions.

The package is laid out along the data flow of one sweep job::

    data/      load the model and the labeled dataset
    baseline/  FP32 TensorFlow predictions (cached)
    convert/   coremltools conversion: precision recipes, targets, validity
    emulator/  numpy executor of the converted MIL program (Core ML stand-in on Linux)
    runtime/   choose and run a runtime (real Core ML on macOS, or the emulator)
    metrics/   accuracy, agreement and output-difference metrics
    tracking/  MLflow store, sweep parent run, child runs, summary
    pick/      ``precision-pick``: cheapest configuration within an accuracy budget
"""

__version__ = "0.1.0"
