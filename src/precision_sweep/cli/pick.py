"""``precision-pick``: the cheapest run of a sweep within an accuracy budget, under a stated rule.

``--rule point`` judges the measured accuracy delta, ``--rule confident`` the lower bound of
its paired-bootstrap CI. The output states the rule, the Pareto table of all evaluated runs
(cost vs accuracy) and why cheaper runs were excluded. ``pareto.png``/``pareto.csv`` are logged
to the sweep's parent run; ``--register NAME`` registers the picked run's LoggedModel (its
``.mlpackage``) in the MLflow Model Registry with the decision as its description, and points
the alias ``--alias`` (default ``candidate``) at the new version.

Exit codes: 0 a pick was made, 1 nothing qualifies (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from pathlib import Path

from precision_sweep.cli.report import default_uri, fail
from precision_sweep.errors import UserInputError
from precision_sweep.tracking import store

PROGRAM = "precision-pick"
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


def _alias(text: str) -> str:
    """A registered model alias as MLflow accepts one, refused before anything is registered."""
    if not re.fullmatch(r"[\w-]{1,255}", text) or text.lower() == "latest" or re.fullmatch(r"[vV]\d+", text):
        raise argparse.ArgumentTypeError(
            f"--alias must be letters, digits, '_' or '-' (at most 255), and neither 'latest' nor "
            f"a version like 'v2' (MLflow reserves them), got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="precision-pick",
        description="Pick the cheapest Core ML configuration of a sweep whose accuracy stays "
        "within --max-drop percentage points of the FP32 TensorFlow baseline.",
    )
    parser.add_argument("--max-drop", type=_budget, required=True, metavar="PP",
                        help="accuracy budget, percentage points below the FP32 baseline")
    parser.add_argument("--rule", choices=("point", "confident"), default="point",
                        help="point: the measured delta must be within budget (default); confident: "
                        "the lower bound of its 95%% CI must be")
    parser.add_argument("--experiment", default="precision-sweep", help="MLflow experiment name")
    parser.add_argument("--sweep", default="latest", help="'latest' or the parent run id of a sweep")
    parser.add_argument("--cost", default="model_size_bytes", help="metric to minimise (default: model_size_bytes)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--register", metavar="NAME", default=None,
                        help="register the picked run's logged model (its .mlpackage) as a version of this "
                        "MLflow registered model")
    parser.add_argument("--alias", type=_alias, default="candidate",
                        help="alias set on the registered version (default: candidate); with --register")
    parser.add_argument("--no-log", action="store_true", help="do not log pareto.png/pareto.csv to the sweep's parent run")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    return parser




def _records(frame, columns) -> list[dict]:
    if frame.empty:
        return []
    return json.loads(frame[[c for c in columns if c in frame]].to_json(orient="records"))


def _measured(row, sep: str = " ") -> str:
    """``accuracy 0.9889``, or a task's primary metric (``mae 0.2952``): what the pick measured."""
    def missing(value) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    if not missing(row.get("accuracy")):
        return f"accuracy{sep}{row['accuracy']:.4f}"
    name = row.get("task_metric")
    value = row.get(f"metric:{name}") if isinstance(name, str) else None
    return f"{name}{sep}{value:.4g}" if not missing(value) else f"accuracy{sep}n/a"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    uri = store.absolute_uri(args.tracking_uri or default_uri())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        fail(PROGRAM, f"error: no MLflow store at {uri}. Run a sweep first (precision-sweep sweep=default) "
              "or pass --tracking-uri.", 2)
    try:
        client = store.client_for(uri)
    except UserInputError as exc:  # a store of another MLflow version, a file that is no database
        fail(PROGRAM, f"error: {exc}", 2)
    try:
        experiment = client.get_experiment_by_name(args.experiment)
    except Exception as exc:  # unreachable server, corrupt file
        fail(PROGRAM, f"error: cannot read the MLflow store at {uri} ({type(exc).__name__}). Check --tracking-uri.", 2)
    if experiment is None:
        fail(PROGRAM, f"error: no experiment named {args.experiment!r} in {uri}. Pass --experiment.", 2)
    if args.sweep == "latest":
        parent = latest_sweep(client, experiment.experiment_id)
        if parent is None:
            fail(PROGRAM, f"error: experiment {args.experiment!r} has no sweep yet. Run precision-sweep -m ... first.", 2)
    else:
        try:
            parent = client.get_run(args.sweep)
        except Exception:
            fail(PROGRAM, f"error: no run with id {args.sweep!r}. Pass --sweep latest or a sweep's parent run id.", 2)
    table = runs_table(child_runs(client, experiment.experiment_id, parent.info.run_id))

    from precision_sweep.pick.report import log_pareto, pareto_view, register
    from precision_sweep.pick.select import pick

    try:
        decision = pick(table, args.max_drop, args.cost, args.rule)
    except KeyError as exc:
        fail(PROGRAM, f"error: {exc.args[0]}. Pass one of them as --cost.", 2)
    parent_id = parent.info.run_id
    logged = [] if args.no_log else log_pareto(client, parent_id, decision, args.max_drop, args.cost)
    columns = ["run_id", "precision", "target", "compute_units", "accuracy", "accuracy_delta", "delta_pp", "ci_low_pp", "ci_high_pp", "cost"]
    version = None
    if decision.pick is not None and args.register:
        p = decision.pick
        description = (
            f"precision-pick from sweep {parent_id}: {p['precision']} at {p['target']} (run {p['run_id']}), "
            f"{_measured(p)}, delta {p['delta_pp']:+.2f} pp, CI low {p['ci_low_pp']:+.2f} pp, "
            f"{args.cost}={p['cost']:,.0f}. Budget {args.max_drop:g} pp. {decision.reason}."
        )
        try:
            version = register(client, args.register, decision, description, alias=args.alias)
        except LookupError as exc:
            fail(PROGRAM, f"error: cannot register: {exc}. Re-run the sweep so the package is logged.", 2)
    if args.json:
        payload = {
            "sweep": parent_id,
            "max_drop_pp": args.max_drop,
            "rule": args.rule,
            "cost": args.cost,
            "reason": decision.reason,
            "pick": None if decision.pick is None else json.loads(json.dumps(
                {k: decision.pick.get(k) for k in columns}, default=str)),
            "qualifying": _records(decision.qualifying, columns),
            "excluded": _records(decision.excluded, columns + ["why"]),
            "pareto": _records(pareto_view(decision), list(pareto_view(decision).columns)),
            "logged_to_parent": logged,
            "registered": None if version is None else {
                "name": version.name, "version": version.version, "alias": args.alias,
                "source": version.source,
                "logged_model": version.source.removeprefix("models:/") if version.source.startswith("models:/") else None},
        }
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(f"sweep {parent_id}: budget {args.max_drop:g} pp below FP32 baseline, cost = {args.cost}")
        print(textwrap.fill(decision.reason.split("; cheapest")[0].split("; the best")[0], width=100))
        view = pareto_view(decision)
        if not view.empty:
            print("\nall evaluated runs, cheapest first (on_front: no run is cheaper and more accurate):")
            print(view.drop(columns=["run_id"]).assign(run=view["run_id"].str[:8]).to_string(
                index=False, float_format=lambda v: f"{v:.2f}" if abs(v) < 1e5 else f"{v:,.0f}"))
        if not decision.excluded.empty:
            print("\nexcluded by the rule:")
            for why in decision.excluded["why"]:
                print(f"  - {why}")
        if not decision.qualifying.empty:
            qualifying = decision.qualifying[["run_id", "precision", "target", "compute_units", "accuracy", "delta_pp", "ci_low_pp", "cost"]]
            print("\nqualifying runs, cheapest first:")
            print(qualifying.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if logged:
            print(f"\nlogged {', '.join(logged)} to the sweep's parent run {parent_id}")
    if decision.pick is None:
        if not args.json:
            print(f"no pick: {decision.reason}", file=sys.stderr)
        sys.exit(1)
    if not args.json:
        p = decision.pick
        print(
            f"\npick: run {p['run_id']}  precision={p['precision']}  target={p['target']}  "
            f"{_measured(p, '=')}  delta={p['delta_pp']:+.2f}pp  CI low={p['ci_low_pp']:+.2f}pp  "
            f"{args.cost}={p['cost']:,.0f}"
        )
        print(textwrap.fill("why: " + decision.reason, width=100, subsequent_indent="     "))
        if version is not None:
            print(f"registered {version.name} version {version.version} as @{args.alias} (source {version.source}); "
                  f"load it as models:/{version.name}@{args.alias}")


if __name__ == "__main__":
    main()
