"""Ingest a batch: read the configured source, make it private, validate, publish or quarantine.

reads:
  params.yaml (--params)      ingest.*: which source (MovieLens-100K from the recbole
                              wheel, fetched once into .cache/downloads/, or your own
                              CSV/TSV/Parquet files named in ingest.table)
  .secrets/pseudonym.key      the pseudonymisation key ($RECOPS_PSEUDONYM_KEY overrides
                              it); created on the first run only
  .secrets/data.key-fingerprint
                              which key wrote data/; every run checks it
writes:
  data/ (--data-dir)          interactions, items, users .parquet: an accepted batch
                              replaces all of them (to append: --append DIR)
  .secrets/data.key-fingerprint
                              recorded when a batch is accepted
  quarantine/<batch>/ (--quarantine-dir)
                              when any row is rejected: rejected and accepted rows per
                              table, report.json and report.md; data/ is left unchanged
                              and an existing quarantine folder is never overwritten

--append DIR adds one batch folder to data/ instead of replacing it (the ingest DAG's
door: pipelines.data.append): DIR holds interactions.csv (and items.csv, users.csv when
it brings new rows) with the canonical column names; the same checks run, plus: every
event's user and item is known, no event is in data/ already. The same batch twice adds
nothing (data/ledger.json); a rejected one goes to quarantine/<DIR name>/.

exit codes:
  0  accepted: data/ replaced by this batch (--append: added to it, or already there)
  1  rows rejected: the batch is in quarantine/<batch>/, data/ unchanged
  2  the batch, params or key cannot be used (one-line reason); data/ and quarantine/ unchanged
  3  unexpected error (one line; --debug shows the traceback); data/ unchanged
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from pipelines.core.config import ParamsError, load_params
from pipelines.core.paths import PROJECT
from pipelines.data.append import AppendResult, append_batch
from pipelines.data.ingest import ingest, summary
from pipelines.data.privacy import PseudonymKeyError
from pipelines.data.quarantine import BatchNameError
from pipelines.data.sources import SourceError
from pipelines.stages.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED, setup_logging

EXIT_ACCEPTED = EXIT_OK
EXIT_REJECTED = 1
EXIT_UNUSABLE = EXIT_BAD_INPUT
assert len({EXIT_ACCEPTED, EXIT_REJECTED, EXIT_UNUSABLE, EXIT_UNEXPECTED}) == 4

NAME = "ingest"


def parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    out = argparse.ArgumentParser(
        prog="python -m pipelines.stages.ingest",
        description=head,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out.add_argument(
        "--params",
        type=Path,
        default=PROJECT.params,
        metavar="FILE",
        help="the params file to read; relative paths in ingest.table resolve against "
        "its folder (default: params.yaml at the repository root)",
    )
    out.add_argument(
        "--batch",
        metavar="NAME",
        help="batch name, 1-64 of letters, digits, '_', '.', '-'; must not be taken by a "
        "quarantine folder (default: UTC time plus a random tag, e.g. 20261124T061500Z-3f9a)",
    )
    out.add_argument(
        "--append",
        type=Path,
        metavar="DIR",
        help="append the batch folder DIR to data/ instead of replacing data/ with the "
        "configured source (its name is the batch name)",
    )
    out.add_argument(
        "--new-key",
        action="store_true",
        help="allow a new pseudonymisation key although data/ was written with another "
        "(the old key is lost or replaced): every user gets a new pseudonym",
    )
    out.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where accepted tables go (default: data/)",
    )
    out.add_argument(
        "--quarantine-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where rejected batches go (default: quarantine/)",
    )
    out.add_argument(
        "--debug", action="store_true", help="debug logs, and the traceback of an unexpected error"
    )
    return out


def _where(err: BaseException) -> str:
    """file:line of the innermost frame: enough to report a bug, and no values from the data."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" at {Path(last.filename).name}:{last.lineno}"


def append_summary(result: AppendResult) -> str:
    """One append in plain words: what was added, or why nothing was."""
    head = f"batch {result.batch}: {result.status} (data version {result.data_version})"
    lines = [head]
    for table, c in result.counts.items():
        lines.append(
            f"  {table}: {c['input']} read, {c['accepted']} accepted, {c['rejected']} rejected"
        )
    if result.status == "accepted":
        lines.append("added " + ", ".join(f"{n} {t}" for t, n in result.added.items()))
    elif result.status == "quarantined":
        lines += ["failed expectations:", *(f"  - {m}" for m in result.messages)]
        lines.append(f"data/ left unchanged; see {result.quarantine}/report.md")
    else:
        lines += [f"  {m}" for m in result.messages]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.debug)
    try:
        params = load_params(args.params)
        if args.append is not None:
            appended = append_batch(
                params.ingest,
                args.append.resolve(),  # the batch's files are named relative to it
                data_dir=args.data_dir,
                quarantine_dir=args.quarantine_dir,
            )
            print(append_summary(appended))
            return EXIT_REJECTED if appended.status == "quarantined" else EXIT_ACCEPTED
        result = ingest(
            params.ingest,
            args.batch,
            data_dir=args.data_dir,
            quarantine_dir=args.quarantine_dir,
            base_dir=Path(args.params).resolve().parent,
            new_key=args.new_key,
        )
    except (ParamsError, SourceError, PseudonymKeyError, BatchNameError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as err:  # the one place that turns any other failure into one line
        if args.debug:
            raise
        # the message is left out: an exception raised while handling rows may quote one
        print(
            f"error: unexpected {type(err).__name__}{_where(err)}; nothing was published. "
            "Re-run with --debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
    print(summary(result))
    return EXIT_ACCEPTED if result.accepted else EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
