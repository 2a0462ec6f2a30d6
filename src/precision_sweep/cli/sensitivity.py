"""``precision-sensitivity RUN_ID``: the per-layer sensitivity a ``precision=search`` run measured.

Prints one row per weight-bearing op (its Keras layer, op type and weight count) and one column
per setting: the accuracy delta in pp when that op alone takes the setting, ``*`` where it
misses the run's budget on its own. Writes the table and the heat map beside it with ``--out``.
Exit codes: 0 shown, 2 bad input (no store, no such run, a run that measured no sensitivity).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from precision_sweep.cli.report import fail

PROGRAM = "precision-sensitivity"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Show the per-layer sensitivity of a precision=search run: the accuracy delta when one "
        "layer alone is compressed, for each layer and setting.",
    )
    parser.add_argument("run_id", help="the search job's MLflow run id")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--out", type=Path, default=None, help="copy sensitivity.csv and sensitivity.png into this folder")
    return parser


def table_text(table: pd.DataFrame, max_drop: float) -> str:
    """Layers x settings, deltas in pp, ``*`` beyond the budget; settings by bits, most first."""
    order = table.drop_duplicates("choice").sort_values("bits_per_weight", ascending=False)["choice"].tolist()
    cells = table.assign(cell=[f"{d:+.2f}{'*' if d < -max_drop else ' '}" for d in table["delta_pp"]])
    rows = table.drop_duplicates("op").set_index("op")  # program order
    wide = cells.pivot_table(index="op", columns="choice", values="cell", aggfunc="first").reindex(index=rows.index, columns=order)
    wide.insert(0, "weights", rows["weights"].map("{:,}".format))
    wide.insert(0, "op_type", rows["op_type"])
    wide.insert(0, "layer", [layer if isinstance(layer, str) and layer else op for op, layer in rows["layer"].items()])
    return wide.fillna("").to_string(index=False)


def main(argv: list[str] | None = None) -> None:
    import os

    from precision_sweep.cli.report import open_run

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    client, run = open_run(PROGRAM, args.tracking_uri, args.run_id, "the run id of a precision=search job",
                           first="Run a search first")
    with tempfile.TemporaryDirectory(prefix=f"{PROGRAM}-") as tmp:
        try:
            csv = Path(client.download_artifacts(args.run_id, "sensitivity.csv", tmp))
        except Exception:
            fail(PROGRAM, f"error: run {args.run_id} has no sensitivity.csv: only precision=search jobs measure it "
                          f"(its precision is {run.data.params.get('precision', 'unknown')!r}). Run "
                          "precision-sweep precision=search ... and pass that job's run id.")
        table = pd.read_csv(csv, keep_default_na=False)
        max_drop = _budget(client, run)
        print(f"run {args.run_id}: accuracy delta (pp) with one layer compressed alone; * misses the "
              f"{max_drop:g} pp budget on its own")
        print(table_text(table, max_drop))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(csv, args.out / "sensitivity.csv")
            try:
                shutil.copy(client.download_artifacts(args.run_id, "sensitivity.png", tmp), args.out / "sensitivity.png")
            except Exception:  # noqa: BLE001 - a run whose plot failed still has its table
                pass
            print(f"written to {args.out}")


def _budget(client, run) -> float:
    """The run's budget, from its search.json (1 pp when it cannot be read)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = json.loads(Path(client.download_artifacts(run.info.run_id, "search.json", tmp)).read_text())
            return float(summary["budget"]["max_drop_pp"])
        except Exception:  # noqa: BLE001
            return 1.0


if __name__ == "__main__":
    main()
