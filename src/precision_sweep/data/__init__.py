"""Stage 1 of the flow: load the model under test and the labeled dataset.

``models`` loads builtin, Keras 3, SavedModel and tf_keras models; ``datasets`` the embedded
digits, ``.npz`` arrays and image folders (``images``); ``validate`` checks paths cheaply
before anything loads; ``inputs`` loads both in dependency order and checks them against
each other.
"""

from precision_sweep.data.datasets import Dataset, InputSpec
from precision_sweep.data.loading import load_dataset
from precision_sweep.data.inputs import check_compatible, load_inputs
from precision_sweep.data.models import LoadedModel, load_model
from precision_sweep.data.validate import validate_sources

__all__ = [
    "Dataset",
    "InputSpec",
    "load_dataset",
    "LoadedModel",
    "load_model",
    "load_inputs",
    "check_compatible",
    "validate_sources",
]
