"""``precision-pick``: print the cheapest run of a sweep within an accuracy budget.

Exit codes: 0 a pick was made, 1 nothing qualifies (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from pathlib import Path

from precision_sweep.tracking import store
from precision_sweep.tracking.summary import child_runs, latest_sweep, runs_table


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--max-drop must be a number of percentage points (e.g. 0.5), got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"--max-drop must be a non-negative number of percentage points, got {text!r}"
        )
    return value


def _default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'outputs' / 'mlflow.db'}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="precision-pick",
        description="Pick the cheapest Core ML configuration of a sweep whose accuracy stays "
        "within --max-drop percentage points of the FP32 TensorFlow baseline.",
    )
    parser.add_argument("--max-drop", type=_budget, required=True, metavar="PP",
                        help="accuracy budget, percentage points below the FP32 baseline")
    parser.add_argument("--experiment", default="precision-sweep", help="MLflow experiment name")
    parser.add_argument("--sweep", default="latest", help="'latest' or the parent run id of a sweep")
    parser.add_argument("--cost", default="model_size_bytes", help="metric to minimise (default: model_size_bytes)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    return parser


def _fail(message: str, code: int) -> None:
    print("precision-pick: " + textwrap.fill(" ".join(message.split()), width=100), file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    uri = store.absolute_uri(args.tracking_uri or _default_uri())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        _fail(f"error: no MLflow store at {uri}. Run a sweep first (precision-sweep -cd sweeps -cn default) "
              "or pass --tracking-uri.", 2)
    client = store.client_for(uri)
    try:
        experiment = client.get_experiment_by_name(args.experiment)
    except Exception as exc:  # unreachable server, corrupt file
        _fail(f"error: cannot read the MLflow store at {uri} ({type(exc).__name__}). Check --tracking-uri.", 2)
    if experiment is None:
        _fail(f"error: no experiment named {args.experiment!r} in {uri}. Pass --experiment.", 2)
    if args.sweep == "latest":
        parent = latest_sweep(client, experiment.experiment_id)
        if parent is None:
            _fail(f"error: experiment {args.experiment!r} has no sweep yet. Run precision-sweep -m ... first.", 2)
    else:
        try:
            parent = client.get_run(args.sweep)
        except Exception:
            _fail(f"error: no run with id {args.sweep!r}. Pass --sweep latest or a sweep's parent run id.", 2)
    table = runs_table(child_runs(client, experiment.experiment_id, parent.info.run_id))

    from precision_sweep.pick.select import pick

    try:
        decision = pick(table, args.max_drop, args.cost)
    except KeyError as exc:
        _fail(f"error: {exc.args[0]}. Pass one of them as --cost.", 2)
    if args.json:
        payload = {
            "sweep": parent.info.run_id,
            "max_drop_pp": args.max_drop,
            "cost": args.cost,
            "reason": decision.reason,
            "pick": None if decision.pick is None else {
                k: decision.pick[k] for k in ("run_id", "precision", "target", "compute_units", "accuracy", "accuracy_delta", "cost")
            },
            "qualifying": decision.qualifying[["run_id", "precision", "target", "compute_units", "accuracy", "accuracy_delta", "cost"]].to_dict("records") if not decision.qualifying.empty else [],
        }
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(f"sweep {parent.info.run_id}: budget {args.max_drop:g} pp below FP32 baseline, cost = {args.cost}")
        if not decision.qualifying.empty:
            view = decision.qualifying[["run_id", "precision", "target", "compute_units", "accuracy", "delta_pp", "cost"]]
            print("qualifying runs, cheapest first:")
            print(view.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if decision.pick is None:
        if not args.json:
            print(f"no pick: {decision.reason}", file=sys.stderr)
        sys.exit(1)
    if not args.json:
        p = decision.pick
        print(
            f"\npick: run {p['run_id']}  precision={p['precision']}  target={p['target']}  "
            f"accuracy={p['accuracy']:.4f}  delta={p['delta_pp']:+.2f}pp  {args.cost}={p['cost']:,.0f}"
        )


if __name__ == "__main__":
    main()
