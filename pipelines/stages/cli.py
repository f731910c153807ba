"""The one command-line wrapper every stage uses: argv, logging, params, timing, exit codes.

A stage module declares what it reads and writes as ``{argument: default path}``
and a ``run(params, **paths) -> summary`` function; ``main`` turns that into
``python -m pipelines.stages.<name> [--<argument> PATH ...] [--params FILE]``
with a ``--help`` that lists every input and output.

Exit codes: 0 done; 2 the input or params are wrong (a one-line reason);
3 an unexpected error (one line; ``--debug`` shows the traceback).

A stage started by ``dvc repro`` must not outlive it: on Linux the stage asks
the kernel to end it when its parent dies, and it refuses to publish outputs
once its parent is gone (a restarted ``dvc repro`` owns them by then).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.core import io
from pipelines.core.config import Params, ParamsError, load_params
from pipelines.core.paths import PROJECT

log = logging.getLogger("pipelines.stages")

EXIT_OK, EXIT_BAD_INPUT, EXIT_UNEXPECTED = 0, 2, 3
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_PR_SET_PDEATHSIG = 1


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=LOG_FORMAT)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits; publish nothing after that."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not glibc/musl: the publish guard still holds
            pass
    # SIGTERM unwinds like an exception: staging folders are removed, nothing is published
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    io.set_publish_guard(lambda: os.getppid() == parent)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _outputs_note(writes: Mapping[str, Path]) -> str:
    outputs = ", ".join(_describe(k, v) for k, v in writes.items())
    return (
        f"{outputs}: left as they were before this run (outputs are replaced only when "
        "complete); `dvc checkout` restores the last committed outputs if they were lost"
    )


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    # torch.save reports a full disk as a RuntimeError from its stream writer
    text = str(err).lower()
    return "no space left" in text or ("file write failed" in text and "stream" in text)


def _describe_error(err: BaseException, writes: Mapping[str, Path]) -> str:
    if _is_disk_full(err):
        places = []
        for path in writes.values():
            existing = next(p for p in (Path(path), *Path(path).parents) if p.exists())
            free = shutil.disk_usage(existing).free
            places.append(f"{_describe('', path)} ({free / 2**20:.0f} MiB free on its disk)")
        return "the disk is full: could not write " + ", ".join(places)
    return f"unexpected error: {type(err).__name__}: {err} (re-run with --debug)"


def _describe(name: str, default: Path) -> str:
    return PROJECT.relative(default)


def parser_for(
    doc: str, reads: Mapping[str, Path], writes: Mapping[str, Path]
) -> argparse.ArgumentParser:
    lines = (doc or "").strip().splitlines()

    def lines_for(title: str, entries: Mapping[str, Path]) -> list[str]:
        return [
            title,
            *(f"  {_describe(k, v)}  (--{k.replace('_', '-')})" for k, v in entries.items()),
        ]

    listing = lines_for("reads:", reads) + lines_for("writes:", writes)
    parser = argparse.ArgumentParser(
        description=lines[0] if lines else None,
        epilog="\n".join([*listing, "", "exit codes: 0 done, 2 bad input or params, 3 unexpected"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, default in {**reads, **writes}.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=Path,
            default=default,
            metavar="PATH",
            help=f"default: {_describe(name, default)}",
        )
    parser.add_argument(
        "--params",
        type=Path,
        default=PROJECT.params,
        metavar="FILE",
        help="the params file to read (default: params.yaml at the repository root)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def main(
    name: str,
    doc: str,
    run: Callable[..., Mapping[str, Any] | None],
    reads: Mapping[str, Path],
    writes: Mapping[str, Path],
    argv: list[str] | None = None,
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse argv, load params once, run the stage, log what it did and how long it took."""
    parser = parser_for(doc, reads, writes)
    if extra_arguments is not None:
        extra_arguments(parser)
    args = vars(parser.parse_args(argv))
    params_path, debug = args.pop("params"), args.pop("debug")
    setup_logging(debug)
    if argv is None:  # a real command (DVC, Airflow, a shell), not a call from Python
        die_with_parent()
    started = time.perf_counter()
    try:
        params: Params = load_params(params_path)
        summary = run(params, **args)
    except (ParamsError, FileNotFoundError, io.PublishError, io.CorruptOutputError) as err:
        if debug:
            raise
        print(f"{name}: {err}\n{_outputs_note(writes)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # the one place that turns any failure into one line
        if debug:
            raise
        print(f"{name}: {_describe_error(err, writes)}\n{_outputs_note(writes)}", file=sys.stderr)
        return EXIT_UNEXPECTED
    if summary:
        log.info("%s: %s", name, json.dumps(summary, default=str))
    log.info("%s: done in %.1fs", name, time.perf_counter() - started)
    return EXIT_OK
