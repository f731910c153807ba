"""Apply a profile (profiles/<name>.args: `-S key=value` lines) to params.yaml, comments kept.

    python -m pipelines.stages.profile profiles/shop.args [--params params.yaml]

The same lines `dvc exp run -S` takes (`make run-gpu`) and the replay reads; here they are
written into params.yaml itself, so that `make ingest` and `dvc repro` both see them
(`make run PROFILE=shop`). Every value is validated first (a misspelt section or key, a
value out of bounds: exit 2, params.yaml unchanged); then the file is rewritten in one
step, its comments and order kept. `git diff params.yaml` shows what changed;
`git checkout params.yaml` undoes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.core.config import ParamsError, parse_overrides, write_overrides
from pipelines.core.paths import PROJECT
from pipelines.stages.cli import EXIT_BAD_INPUT, EXIT_OK


def main(argv: list[str] | None = None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.stages.profile",
        description=head,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("profile", type=Path, help="a profiles/<name>.args file")
    parser.add_argument("--params", type=Path, default=PROJECT.params, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        if not args.profile.is_file():
            raise ParamsError(f"{args.profile} is not a file: name a profiles/<name>.args file")
        overrides = parse_overrides(args.profile.read_text().splitlines())
        changed = write_overrides(args.params, overrides)
    except ParamsError as err:
        print(f"profile: {err}; {args.params} left unchanged", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{args.params}: {len(changed)} of {len(overrides)} values set from {args.profile}"
        + "".join(f"\n  {key}" for key in changed)
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
