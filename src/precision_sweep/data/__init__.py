"""Stage 1 of the flow: load the model under test and the labeled dataset."""

from precision_sweep.data.datasets import Dataset, load_dataset
from precision_sweep.data.models import LoadedModel, load_model

__all__ = ["Dataset", "load_dataset", "LoadedModel", "load_model"]
