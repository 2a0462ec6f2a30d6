"""Stage 6: MLflow tracking.

``store`` resolves the tracking URI once (absolute) and creates the database and experiment
in the launching process; ``callbacks`` owns the sweep's parent run (Hydra callback);
``job_run`` is one child run; ``summary`` reads a sweep back for the terminal and the pick.
"""
