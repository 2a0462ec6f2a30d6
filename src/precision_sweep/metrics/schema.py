"""Config schema of the ``task`` group: what the model's output means and how a variant is judged.

``task=classification`` (the default) is the classification path of the job: accuracy from the
top-1 class or a classifier's ``classLabel``, agreement, the per-class report. Every other task
names its comparison by Hydra ``_target_`` (``compare``: a function of ``(labels, outputs,
baseline_outputs, *, confidence, n_resamples, seed, **options)`` returning
:class:`~precision_sweep.metrics.tasks.paired.MetricComparison` values, the primary metric first)
and the kind of labels its dataset holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional

from omegaconf import MISSING


class LabelKind(StrEnum):
    """What a dataset's labels are, as the task reads them (``task.labels``): ``classes`` index
    the model's output classes (classification); ``ids`` are integer identities that do not
    index the outputs (embedding: same id, same identity); ``values`` are arrays of any shape
    (regression targets, segmentation masks)."""

    classes = "classes"
    ids = "ids"
    values = "values"


@dataclass
class TaskConfig:
    name: str = MISSING
    # What the dataset's labels are: classes (index the model's outputs), ids (embedding
    # identities) or values (regression targets, segmentation masks; npz datasets).
    labels: LabelKind = LabelKind.classes
    # The comparison (null: the classification path): {_target_: module.function, option: value}.
    compare: Optional[Any] = None
