"""Stage 3: convert the Keras model to a Core ML ML program at a precision and a target.

``targets`` maps target names to coremltools targets and spec versions, ``validity`` says
which precision x target combinations can deploy, ``recipes`` applies a precision recipe and
``converter`` runs the TF frontend once per model and target and builds each variant from a
deep copy of its MIL program.
"""

from precision_sweep.convert.converter import ConvertedModel, convert_variant
from precision_sweep.convert.targets import effective_target_name
from precision_sweep.convert.validity import invalid_reason

__all__ = ["ConvertedModel", "convert_variant", "effective_target_name", "invalid_reason"]
