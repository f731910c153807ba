"""Replay MovieLens-100K week by week through ingest → monitor → retrain → deploy (design.md §6).

    python -m pipelines.stages.replay run  [--weeks 8] [--corrupt WEEK] [--keep-serving]
                [--profile profiles/replay.args] [--workspace artifacts/replay/workspace]
    python -m pipelines.stages.replay table
    python -m pipelines.stages.replay land [--week N] [--corrupt] [--shift KIND]

run: the loop without Airflow, the steps the DAG tasks call. A fresh replay workspace
(a copy of the project's pipeline in --workspace, with its own data/, artifacts/,
.bentoml/ and DVC state: the project's own are never touched) gets week 0, the initial
12-week snapshot (ingested, then trained on with the real `dvc repro` and served with
`bentoml serve` once ready), then each weekly batch: ingested (appended or quarantined),
monitored (Evidently drift against what the champion was trained on, and the champion's
next-item NDCG@10 on the week), and on drift retrained, blessed or not, and switched to
once ready. --profile applies `-S key=value` overrides to params.yaml for the workspace
(a cheaper training; the default file says which). --corrupt WEEK lands a corrupted copy
of that week first (it must be quarantined). One row per week is printed as it finishes;
at the end the table and timings go to artifacts/replay/: weeks.md, weeks.json and
quality.csv (the NDCG curve, a DVC plot: `dvc plots show`). The server it started is
stopped at the end unless --keep-serving. `table` prints the last run's table again.

land: drop one batch of the stream into the landing folder the ingest DAG watches
(landing/ of the project, or of $RECOPS_WORKSPACE): the next week by a cursor, or
--week N (0 = the initial snapshot, into an empty data/), optionally --corrupt or
--shift genre:<Name> | age:<low>-<high> | new-items.

exit codes: 0 done, 2 bad arguments or params, 3 unexpected error
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import yaml

from pipelines import paths
from pipelines.config import ParamsError, load_params
from pipelines.data import replay
from pipelines.data.sources import SourceError, read_source
from pipelines.io import write_json, write_text
from pipelines.monitoring import weekly
from pipelines.monitoring.settings import Workspace
from pipelines.stages.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED, setup_logging

log = logging.getLogger("pipelines.stages.replay")

OUT = paths.ARTIFACTS / "replay"
PROFILE = paths.ROOT / "profiles" / "replay.args"
WORKSPACE = paths.ARTIFACTS / "replay" / "workspace"  # no hidden folder: BentoML refuses one
BIN = Path(sys.executable).parent
STEPS = ("land", "ingest", "monitor", "retrain", "deploy", "score")  # as Week.seconds names them


def parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    out = argparse.ArgumentParser(
        prog="python -m pipelines.stages.replay",
        description=head,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out.add_argument("--params", type=Path, default=paths.PARAMS, metavar="FILE")
    out.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    commands = out.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="replay weeks 0..N through the loop; print the table")
    run.add_argument("--weeks", type=int, default=8, help="weekly batches after week 0")
    run.add_argument("--profile", type=Path, default=PROFILE, help="-S key=value overrides")
    run.add_argument("--workspace", type=Path, default=WORKSPACE, help="replaced on each run")
    run.add_argument("--out", type=Path, default=OUT, help="where the table and curve go")
    run.add_argument("--corrupt", type=int, metavar="WEEK", help="land a corrupted copy first")
    run.add_argument("--keep-serving", action="store_true", help="leave the champion running")
    table = commands.add_parser("table", help="print (and rewrite) the last run's table")
    table.add_argument("--out", type=Path, default=OUT, help="where run wrote weeks.json")
    land = commands.add_parser("land", help="drop one batch into the landing folder")
    land.add_argument("--week", type=int, help="default: the next one (a cursor in landing/)")
    land.add_argument("--corrupt", action="store_true")
    land.add_argument("--shift", metavar="KIND", help="genre:<Name>, age:<lo>-<hi>, new-items")
    return out


# ---- the table ---------------------------------------------------------------------------


def _ndcg(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def retrain_cell(week: weekly.Week) -> str:
    """What a retrain came to: switched, not blessed (and why), or blessed but not served."""
    if not week.retrained:
        return "—"
    compared = re.search(r"valid ndcg@10: ([0-9.]+) vs champion \S+ ([0-9.]+)", week.gate)
    why = f" (valid NDCG@10 {compared[1]} vs {compared[2]})" if compared else ""
    if week.switched:
        return f"switched{why or ' (first release)'}"
    if week.blessed:
        return f"blessed, not served: {week.note}"
    return f"not blessed{why or f': {week.gate}'}"


def row(week: weekly.Week) -> str:
    """One Markdown row: rows in and out, the decision and its main reason, what the retrain
    did, the champion's NDCG before and after, the popularity floor, seconds."""
    if week.status == "quarantined":
        rows = f"0 | {week.quarantined:,} ({week.rejected} failed a check)"
    else:
        rows = f"{week.accepted:,} | 0"
    decision = week.decision or ("initial snapshot" if week.week == 0 else week.status)
    reason = week.reason or ("first training" if week.week == 0 else "")
    cells = [
        str(week.week),
        week.batch,
        rows,
        f"{decision}: {reason}".replace("|", "/"),
        retrain_cell(week).replace("|", "/"),
        _ndcg(week.ndcg_before),
        _ndcg(week.ndcg_after),
        str(week.users),
        _ndcg(week.ndcg_popularity),
        f"{sum(week.seconds.values()):.0f}",
    ]
    return f"| {' | '.join(cells)} |"


HEADER = (
    "| week | batch | accepted | quarantined | decision: main reason | retrain | "
    "champion NDCG@10 before | after | users | popularity NDCG@10 | seconds |\n"
    "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|"
)


def timing(weeks: list[weekly.Week]) -> str:
    """Mean seconds of one weekly cycle, with and without a retrain, and per step."""
    later = [w for w in weeks if w.week > 0 and w.status == "accepted"]
    lines = []
    for label, chosen in (
        ("without a retrain", [w for w in later if not w.retrained]),
        ("with a retrain", [w for w in later if w.retrained]),
    ):
        if not chosen:
            continue
        steps = dict.fromkeys(STEPS, 0.0)
        for w in chosen:
            for step, s in w.seconds.items():
                steps[step] = steps.get(step, 0.0) + s / len(chosen)
        steps = {step: s for step, s in steps.items() if s}
        total = sum(steps.values())
        parts = ", ".join(f"{step} {s:.0f}" for step, s in steps.items())
        lines.append(f"one weekly cycle {label}: {total:.0f} s (mean of {len(chosen)}; {parts})")
    return "\n".join(lines)


def write_outputs(weeks: list[weekly.Week], out: Path, header: str) -> None:
    table = "\n".join([HEADER, *(row(w) for w in weeks)])
    write_text(f"{header}\n\n{table}\n\n{timing(weeks)}\n", out / "weeks.md")
    write_json({"header": header, "weeks": [w.to_dict() for w in weeks]}, out / "weeks.json")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "quality.csv.tmp", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "week",
                "batch",
                "ndcg_before",
                "ndcg_after",
                "ndcg_popularity",
                "retrained",
                "switched",
            ]
        )
        for w in weeks:
            if w.week == 0 or w.status != "accepted":
                continue
            writer.writerow(
                [
                    w.week,
                    w.batch,
                    w.ndcg_before,
                    w.ndcg_after,
                    w.ndcg_popularity,
                    int(w.retrained),
                    int(w.switched),
                ]
            )
    os.replace(out / "quality.csv.tmp", out / "quality.csv")


# ---- commands ----------------------------------------------------------------------------


def stream_of(params_path: Path) -> replay.Stream:
    params = load_params(params_path)
    return replay.cut(read_source(params.ingest), params.replay.initial_weeks)


def run(args: argparse.Namespace) -> int:
    params = yaml.safe_load(args.params.read_text())
    overrides = (
        weekly.parse_overrides(args.profile.read_text().splitlines()) if args.profile else {}
    )
    params = weekly.with_overrides(params, overrides)
    stream = stream_of(args.params)
    if args.weeks < 1 or args.weeks > stream.n_weeks:
        raise ValueError(f"--weeks must be 1..{stream.n_weeks}")
    started = time.perf_counter()
    ws = weekly.prepare_workspace(paths.ROOT, args.workspace, params, dvc=str(BIN / "dvc"))
    load_params(ws.params)  # the overridden params validate before anything runs
    header = (
        f"Replay of MovieLens-100K, weeks 0-{args.weeks} (week 0: the initial "
        f"{params['replay']['initial_weeks']}-week snapshot), workspace {ws.root}, "
        f"profile {args.profile}: {', '.join(f'{k}={v}' for k, v in overrides.items())}"
    )
    print(f"{header}\n\n{HEADER}", flush=True)
    weeks: list[weekly.Week] = []
    try:
        for number in range(args.weeks + 1):
            if args.corrupt == number:
                weeks.append(weekly.run_week(ws, stream, number, corrupted=True))
                print(row(weeks[-1]), flush=True)
            weeks.append(weekly.run_week(ws, stream, number))
            print(row(weeks[-1]), flush=True)
            write_outputs(weeks, args.out, header)
    finally:
        if not args.keep_serving:
            stopped = weekly.stop_serving(ws)
            if stopped:
                print(f"\nstopped the server of {stopped}")
    print(f"\n{timing(weeks)}\nwhole replay: {time.perf_counter() - started:.0f} s")
    print(f"wrote {args.out}/weeks.md, weeks.json, quality.csv; reports in {ws.monitoring}")
    return EXIT_OK


def table(args: argparse.Namespace) -> int:
    saved = json.loads((args.out / "weeks.json").read_text())
    weeks = [weekly.Week(**w) for w in saved["weeks"]]
    write_outputs(weeks, args.out, saved["header"])
    print((args.out / "weeks.md").read_text())
    return EXIT_OK


def land(args: argparse.Namespace) -> int:
    ws = Workspace.from_env()
    path = replay.drop_week(
        stream_of(args.params), ws.landing, args.week, corrupted=args.corrupt, shifted=args.shift
    )
    print(f"landed {path}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.debug)
    # `dvc repro` runs `python -m ...` and `dvc`: this interpreter's, as `make` arranges
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        return {"run": run, "table": table, "land": land}[args.command](args)
    except (ParamsError, SourceError, ValueError, IndexError, FileExistsError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # one line, not a traceback; --debug shows it
        if args.debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
