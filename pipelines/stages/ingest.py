"""Ingest a batch: read the configured source, apply privacy, validate, publish or quarantine.

Exit codes: 0 accepted and published to data/; 1 rows rejected (quarantined,
data/ unchanged); 2 the batch could not be read at all (a one-line reason).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines import paths
from pipelines.config import ParamsError, load_params
from pipelines.data.ingest import BatchNameError, ingest, summary
from pipelines.data.privacy import PseudonymKeyError
from pipelines.data.sources import SourceError
from pipelines.stages.cli import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", help="batch name (default: UTC timestamp)")
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quarantine-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        result = ingest(
            params,
            args.batch,
            data_dir=args.data_dir,
            quarantine_dir=args.quarantine_dir,
            base_dir=Path(args.params).resolve().parent,
        )
    except (ParamsError, SourceError, PseudonymKeyError, BatchNameError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0 if result.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
