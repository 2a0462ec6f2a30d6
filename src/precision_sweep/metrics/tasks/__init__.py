"""Task metrics: each task's metric of (labels, outputs) and its paired comparison of a variant
against the FP32 baseline on the same samples, as one task-neutral result.

One module per task, each with the same small interface: ``check(labels, outputs)`` (a
UserInputError where the labels do not fit the outputs), the metric as plain functions, and
``compare(labels, outputs, baseline_outputs, *, confidence, n_resamples, seed, **options)``
returning a tuple of :class:`~precision_sweep.metrics.tasks.paired.MetricComparison`, the
task's primary metric first. A task config can point its ``_target_`` at a ``compare``; nothing
here branches on a task's name.

============== ================================= ===============================================
module         metrics                           interval
============== ================================= ===============================================
classification ``accuracy``, ``top<k>_accuracy`` ``paired_per_sample`` (``paired_statistics``)
regression     ``mae``, ``rmse``                 MAE ``paired_per_sample``, RMSE ``paired_bootstrap``
segmentation   ``miou``, ``pixel_accuracy``      ``paired_bootstrap``, per-image confusion matrices
detection      ``map_50_95``, ``map_50``         ``paired_bootstrap`` over images (pycocotools)
embedding      ``recall_at_<k>``                 ``paired_per_sample`` over queries
user           a ``_target_`` function           ``paired_bootstrap``
============== ================================= ===============================================

:mod:`~precision_sweep.metrics.tasks.paired` holds the result type, the sign convention
(``metric_delta`` is variant minus baseline in the metric's units; ``higher_is_better`` says
which way is better) and the two interval rules every task uses.
"""

from precision_sweep.metrics.tasks.paired import MetricComparison

__all__ = ["MetricComparison"]
