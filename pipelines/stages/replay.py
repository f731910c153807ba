"""Replay MovieLens-100K week by week through ingest → monitor → retrain → deploy (design.md §6).

    python -m pipelines.stages.replay run  [--weeks 8] [--corrupt WEEK] [--keep-serving]
                [--profile profiles/replay.args] [--workspace artifacts/replay/workspace]
    python -m pipelines.stages.replay table
    python -m pipelines.stages.replay land [--week N] [--corrupt] [--shift KIND]
    python -m pipelines.stages.replay stream [--workspace artifacts/stream/workspace]

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

stream: a fresh stream workspace for the Airflow UI (`make stream` then starts Airflow on
it): a replay workspace with the replay profile, week 0 (the initial snapshot) ingested,
trained on and served, as the replay's week 0. Then `make land` (this command's `land`
with $RECOPS_WORKSPACE set to it) drops week after week into its landing folder, and the
DAGs take each through ingest → monitor → retrain → gate → switch. The project's own data/
already holds all of MovieLens: landing into it would only quarantine every week as
repeats.

exit codes: 0 done, 2 bad arguments or params, 3 unexpected error
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from pipelines.core.config import (
    Params,
    ParamsError,
    load_params,
    overridden_params,
    parse_overrides,
)
from pipelines.core.paths import PROJECT, Layout
from pipelines.data.sources import SourceError, read_source
from pipelines.loop import replay, stream
from pipelines.loop.workspace import prepare_workspace, stop_serving
from pipelines.stages.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED, setup_logging

log = logging.getLogger("pipelines.stages.replay")

PROFILE = PROJECT.root / "profiles" / "replay.args"
BIN = Path(sys.executable).parent


def parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    out = argparse.ArgumentParser(
        prog="python -m pipelines.stages.replay",
        description=head,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out.add_argument("--params", type=Path, default=PROJECT.params, metavar="FILE")
    out.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    commands = out.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="replay weeks 0..N through the loop; print the table")
    run.add_argument("--weeks", type=int, default=8, help="weekly batches after week 0")
    run.add_argument("--profile", type=Path, default=PROFILE, help="-S key=value overrides")
    run.add_argument(
        "--workspace", type=Path, default=PROJECT.replay_workspace, help="replaced on each run"
    )
    run.add_argument(
        "--out", type=Path, default=PROJECT.replay, help="where the table and curve go"
    )
    run.add_argument("--corrupt", type=int, metavar="WEEK", help="land a corrupted copy first")
    run.add_argument("--keep-serving", action="store_true", help="leave the champion running")
    table = commands.add_parser("table", help="print (and rewrite) the last run's table")
    table.add_argument("--workspace", type=Path, default=PROJECT.replay_workspace)
    table.add_argument(
        "--out", type=Path, default=PROJECT.replay, help="where run wrote weeks.json"
    )
    stream = commands.add_parser("stream", help="a fresh workspace the DAGs watch, week 0 landed")
    stream.add_argument("--profile", type=Path, default=PROFILE, help="-S key=value overrides")
    stream.add_argument(
        "--workspace", type=Path, default=PROJECT.stream_workspace, help="replaced each time"
    )
    land = commands.add_parser("land", help="drop one batch into the landing folder")
    land.add_argument("--week", type=int, help="default: the next one (a cursor in landing/)")
    land.add_argument("--corrupt", action="store_true")
    land.add_argument("--shift", metavar="KIND", help="genre:<Name>, age:<lo>-<hi>, new-items")
    return out


# ---- commands ----------------------------------------------------------------------------


def stream_of(params: Params) -> stream.Stream:
    return stream.cut(read_source(params.ingest), params.replay.initial_weeks)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.profile.read_text().splitlines()) if args.profile else {}
    # the overridden params validate before anything runs; the workspace gets them
    params_yaml, params = overridden_params(args.params, overrides)
    feed = stream_of(params)
    if args.weeks < 1 or args.weeks > feed.n_weeks:
        raise ValueError(f"--weeks must be 1..{feed.n_weeks}")
    started = time.perf_counter()
    layout = prepare_workspace(PROJECT, args.workspace, params_yaml, dvc=str(BIN / "dvc"))
    header = (
        f"Replay of MovieLens-100K, weeks 0-{args.weeks} (week 0: the initial "
        f"{params.replay.initial_weeks}-week snapshot), workspace {layout.root}, "
        f"profile {args.profile}: {', '.join(f'{k}={v}' for k, v in overrides.items())}"
    )
    print(f"{header}\n\n{replay.HEADER}", flush=True)
    weeks: list[replay.Week] = []
    shown: list[str] = []
    try:
        for number in range(args.weeks + 1):
            if args.corrupt == number:
                weeks.append(replay.run_week(layout, feed, number, params, corrupted=True))
                print(replay.row(weeks[-1]), flush=True)
            weeks.append(replay.run_week(layout, feed, number, params))
            print(replay.row(weeks[-1]), flush=True)
            shown = replay.write_outputs(weeks, layout, args.out, header, params.monitoring.k)
    finally:
        if not args.keep_serving:
            stopped = stop_serving(layout)
            if stopped:
                print(f"\nstopped the server of {stopped}")
    print("\n" + "\n".join(f"- {line}" for line in shown))
    print(f"\n{replay.timing(weeks)}\nwhole replay: {time.perf_counter() - started:.0f} s")
    print(f"wrote {args.out}/weeks.md, weeks.json, quality.csv; reports in {layout.monitoring}")
    return EXIT_OK


def table(args: argparse.Namespace) -> int:
    saved = json.loads((args.out / "weeks.json").read_text())
    weeks = [replay.Week(**w) for w in saved["weeks"]]
    replay.write_outputs(weeks, Layout(args.workspace), args.out, saved["header"])
    print((args.out / "weeks.md").read_text())
    return EXIT_OK


def land(args: argparse.Namespace) -> int:
    layout = Layout.from_env()
    feed = stream_of(load_params(args.params))
    path = stream.drop_week(
        feed, layout.landing, args.week, corrupted=args.corrupt, shifted=args.shift
    )
    print(f"landed {path}")
    return EXIT_OK


def stream_workspace(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.profile.read_text().splitlines()) if args.profile else {}
    params_yaml, params = overridden_params(args.params, overrides)
    layout = prepare_workspace(PROJECT, args.workspace, params_yaml, dvc=str(BIN / "dvc"))
    feed = stream_of(params)
    print(f"stream workspace {layout.root}: week 0 (the initial snapshot), the first training")
    week = replay.run_week(layout, feed, stream.read_cursor(layout.landing), params)
    stream.write_cursor(layout.landing, 1)
    print(f"  {week.batch}: {week.status}, {replay.retrain_cell(week)}; serving {week.champion}")
    print(f"  Airflow on it:  RECOPS_WORKSPACE={layout.root} make airflow   (make stream does it)")
    print(f"  the next week:  RECOPS_WORKSPACE={layout.root} make land")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.debug)
    # `dvc repro` runs `python -m ...` and `dvc`: this interpreter's, as `make` arranges
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        commands = {"run": run, "table": table, "land": land, "stream": stream_workspace}
        return commands[args.command](args)
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
