"""The command-line entry points and what they share.

``precision-sweep`` is the Hydra app in :mod:`precision_sweep.app` (beside its configs), with
its sweep callback in :mod:`.callback`; ``precision-pick`` is :mod:`.pick`,
``precision-diagnose`` :mod:`.diagnose`. Every error a user can fix is reported by
:mod:`.report` as one paragraph with exit code 2; nothing below this layer exits the process.
"""
