"""Automatic mixed-precision repair (``precision=fp16_auto``, ``precision=int8_auto``).

Start from the low-precision program; while the accuracy budget fails on the calibration
split, rank the ops by the error they introduce (the per-op drift of
:mod:`precision_sweep.diagnose`) and keep the most sensitive ones at higher precision: fp32
compute for fp16 (``FP16ComputePrecision(op_selector=...)``), fp16 weights for int8
(``OptimizationConfig(op_name_configs={name: None})``). ``greedy`` holds the loop; every
program it tries is built by :mod:`precision_sweep.convert`, and the ``auto_repair`` block's
schema is part of the precision recipe's (``convert.schema``).
"""
