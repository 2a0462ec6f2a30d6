"""Automatic mixed-precision repair (``precision=fp16_auto``, ``precision=int8_auto``).

Start from the low-precision program; while the accuracy budget fails on the calibration
split, rank the ops by the error they introduce (the per-op drift of
:mod:`precision_sweep.diagnose`) and keep the most sensitive ones at higher precision: fp32
compute for fp16 (``FP16ComputePrecision(op_selector=...)``), fp16 weights for int8
(``OptimizationConfig(op_name_configs={name: None})``). ``greedy`` holds the loop; this module
stays import-light because ``convert.schema`` imports ``repair.schema``.
"""


def repair_in_job(cfg, run, model, dataset, converted):
    """See :func:`precision_sweep.repair.greedy.repair_in_job`."""
    from precision_sweep.repair.greedy import repair_in_job as repair

    return repair(cfg, run, model, dataset, converted)
