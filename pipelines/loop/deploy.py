"""Switch the served model only once the new server is ready; otherwise the old one keeps serving.

``artifacts/serving/current.json`` names what is served: the Bento tag, its port and
process id. ``deploy`` starts the new Bento beside the old one on a free loopback
port, polls ``/readyz`` until ``ready_timeout``; only then is current.json replaced
(atomically) and the old server stopped. A server that never gets ready is stopped
and the record, and the old server, are left as they were.

The server command is a template (``{bento}``, ``{port}``), by default
``bentoml serve`` of the Bento on 127.0.0.1; tests pass a tiny stand-in server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.core.io import write_json

log = logging.getLogger(__name__)

SERVE_ENV = "RECOPS_SERVE_CMD"
DEFAULT_SERVE = (
    f"{Path(sys.executable).parent / 'bentoml'} serve {{bento}} --host 127.0.0.1 --port {{port}}"
)


class NotReady(RuntimeError):
    """The new server did not answer /readyz in time; the old one still serves."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_ready(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def current(record: Path) -> dict[str, Any] | None:
    return json.loads(Path(record).read_text()) if Path(record).exists() else None


def stop(pid: int) -> None:
    """SIGTERM a server started here, with its workers (its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def deploy(
    bento: str,
    record: Path,
    *,
    ready_timeout: float = 120.0,
    command: str | None = None,
    env: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start ``bento``, wait for /readyz, then switch ``record`` to it and stop the old server."""
    port = free_port()
    template = command or os.environ.get(SERVE_ENV) or DEFAULT_SERVE
    argv = shlex.split(template.format(bento=bento, port=port))
    process = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdin=subprocess.DEVNULL,  # not the caller's: under Airflow 3 that is the task's socket
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if is_ready(port):
            old = current(record)
            new = {
                "bento": bento,
                "port": port,
                "pid": process.pid,
                "since": time.time(),
                **(extra or {}),
            }
            write_json(new, record)
            if old and old.get("pid") and old["pid"] != process.pid:
                stop(int(old["pid"]))
            log.info("serving %s on port %d", bento, port)
            return new
        time.sleep(0.2)
    stop(process.pid)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    old = current(record)
    raise NotReady(
        f"{bento} did not become ready within {ready_timeout:.0f}s; "
        f"{old['bento'] if old else 'nothing'} keeps serving"
    )
