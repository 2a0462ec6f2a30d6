"""Stage 3: convert the Keras model to a Core ML model at a precision and a target: an ML
Program (iOS15/macOS12 on) or a neuralnetwork ``.mlmodel`` (iOS13/iOS14, macOS10_15/macOS11).

``targets`` maps target names to coremltools targets, spec versions and model formats,
``validity`` says which precision x target combinations can deploy, ``recipes`` maps a
precision recipe onto coremltools' compute precision and ``coremltools.optimize.coreml``
configs (or ``quantize_weights`` stages for neuralnetwork models), ``calibration``
calibrates activation quantization (W8A8) with the emulator, and ``converter`` caches the TF
frontend program and the float base package per model and target (in the process and on disk)
and builds each variant from them.
"""

from precision_sweep.convert.calibration import calibration_split
from precision_sweep.convert.converter import ConvertedModel, convert_variant
from precision_sweep.convert.targets import effective_target_name
from precision_sweep.convert.validity import invalid_reason

__all__ = ["ConvertedModel", "calibration_split", "convert_variant", "effective_target_name", "invalid_reason"]
