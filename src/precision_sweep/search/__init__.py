"""The mixed-precision search (``precision=search``): one weight setting per weight-bearing op,
the cheapest found within the pick budget.

``space`` (what each op may take) -> ``evaluate`` (one assignment built and judged) ->
``sensitivity`` (each op alone) -> ``optimize`` (greedy fill, Optuna) -> ``run`` (the job's
part: the split, MLflow child runs, exported recipes, the held-out verdict).
"""
