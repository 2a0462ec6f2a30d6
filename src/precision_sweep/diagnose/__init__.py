"""Per-op drift diagnosis: why a converted program disagrees with its FP32 twin.

``drift`` matches the variables of a low-precision program with those of the FP32 program of
the same model (following coremltools' ``_cast_fp16``/``_quantized`` renames) and measures
every op's relative error, cosine similarity, SQNR and NaN/Inf; ``layers`` maps MIL names back
to Keras layer names; ``run`` diagnoses a logged MLflow run; ``cli`` is ``precision-diagnose``.
"""
