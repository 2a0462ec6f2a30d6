"""``precision-diagnose RUN_ID``: per-op drift of a logged run against its FP32 twin.

Prints the report, logs ``drift.csv``/``drift.png`` to the run and sets its ``drift_*`` tags.
Exit codes: 0 diagnosed, 2 bad input (no store, no such run, nothing to diagnose).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from precision_sweep.cli.report import fail

PROGRAM = "precision-diagnose"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="precision-diagnose",
        description="Run a job's Core ML program and the FP32 program of the same model on a "
        "diagnostic batch and report, op by op, where the error jumps and where NaN/Inf appears.",
    )
    parser.add_argument("run_id", help="the job's MLflow run id")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--samples", type=int, default=None, help="test samples in the diagnostic batch (default: the run's diagnosis.samples)")
    parser.add_argument("--threshold", type=float, default=None, help="relative error that counts as a jump (default: the run's diagnosis.threshold)")
    parser.add_argument("--top", type=int, default=8, help="ops to print, most error first")
    return parser



def _show_progress() -> None:
    """Say on stderr when the diagnosis has to build something (a conversion the job did not
    cache): the converter's INFO messages, nothing else's."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    logger = logging.getLogger("precision_sweep")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> None:
    from precision_sweep.cli.report import open_run

    args = build_parser().parse_args(argv)
    _show_progress()
    client, run = open_run(PROGRAM, args.tracking_uri, args.run_id, "a job's run id (see the MLflow UI or precision-pick)")
    doctor = run.data.tags.get("preprocessing_doctor")
    if doctor:
        print(f"run {args.run_id}: {doctor}")
    if run.data.params.get("coreml_file"):
        if not doctor:
            print(f"run {args.run_id}: {run.data.params['coreml_file']} agreed with TF (no preprocessing diagnosis was needed).")
        print("The run evaluated a Core ML file of your own: its ops have no FP32 twin converted by precision-sweep, "
              "so there is no per-op drift report. Sweep the Keras model itself to trace drift op by op.")
        return
    if doctor and run.data.tags.get("preprocessing_cause", "none") != "none":
        print("The preprocessing above explains the disagreement; the per-op drift below is measured with the "
              "job's own preprocessing.")

    from precision_sweep.config import Config
    from precision_sweep.diagnose.drift import rank_ops
    from precision_sweep.diagnose.run import diagnose_run
    from precision_sweep.errors import UserInputError

    with tempfile.TemporaryDirectory(prefix="precision-diagnose-") as tmp:
        try:
            report = diagnose_run(client, args.run_id, Path(tmp), Config, args.samples, args.threshold)
        except UserInputError as exc:
            fail(PROGRAM, f"error: {exc}")
    print(f"run {args.run_id}: {report.summary()}")
    if not report.table.empty:
        view = rank_ops(report.table).head(args.top)[
            ["position", "layer", "op_type", "op_name", "rel_error", "gain", "cosine", "sqnr_db", "nonfinite"]
        ]
        print("ops that introduce the most error:")
        print(view.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    from precision_sweep.diagnose.cliffs import summary

    cliffs = getattr(report, "cliffs", None)
    if cliffs is not None:
        print(f"numeric cliffs on the run's device: {summary(cliffs, limit=len(cliffs) or 1)}")
    print("logged drift.csv, drift.png, cliffs.csv and the drift_first_op/drift_first_layer tags to the run")


if __name__ == "__main__":
    main()
