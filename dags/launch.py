"""What the Airflow launchers share: settings, the metadata tables and pools, health, stopping.

`dags/standalone.py` (`make airflow`: SQLite, LocalExecutor, one `airflow standalone`) and
`dags/celery_stack.py` (`make airflow-celery`: PostgreSQL, Redis, the components one by one
and two Celery workers) build on these. Every server binds 127.0.0.1 only.

Not a DAG file: dags/.airflowignore keeps the dag-processor from parsing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

DAGS = Path(__file__).resolve().parent
ROOT = DAGS.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # loopback only: the simple auth manager is for one developer's machine
# dvc repro and appends to data/ (with their `dvc add`): one at a time, since concurrent
# DVC runs in one workspace lock each other and a training run must not see data/ change
POOLS = (("recops_dvc", 1, "dvc repro and appends to data/, one at a time"),)
USER = "admin"
# what must report healthy before the launcher says Airflow is up
PARTS = ("metadatabase", "scheduler", "dag_processor")


def environment(home: Path, port: int, unpaused: bool = False, **settings: str) -> dict[str, str]:
    """The Airflow settings of this project (AIRFLOW__SECTION__KEY variables).

    ``settings`` add or replace keys (``AIRFLOW__CORE__EXECUTOR="CeleryExecutor"``, ...);
    any other ``AIRFLOW__`` variable of the caller's environment passes through.
    """
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False" if unpaused else "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        # tasks reach the execution API at {base_url}/execution/: the same loopback port
        "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
        # `airflow`, `dvc`, `python` and `bentoml` are this environment's, as under `make`
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings,
    }
    return {**os.environ, **env}


def prepare(env: dict[str, str]) -> str:
    """Tables, pools and the admin password (generated on first use); returns the password."""
    # before airflow is imported (it reads its settings once); quiet here, not in the components
    os.environ.update({**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    for name, slots, description in POOLS:
        Pool.create_or_update_pool(name, slots, description, include_deferred=False)
    manager = create_auth_manager()
    manager.init()  # writes the password file once, as `airflow standalone` would
    passwords = json.loads(Path(manager.get_generated_password_file()).read_text())
    return passwords[USER]


def health(port: int) -> dict | None:
    url = f"http://{HOST}:{port}/api/v2/monitor/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def healthy(report: dict | None, parts: Iterable[str] = PARTS) -> bool:
    return bool(report) and all(
        (report.get(part) or {}).get("status") == "healthy" for part in parts
    )


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """One component in its own session (its group is everything it starts), output to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(
    process: subprocess.Popen, first: int = signal.SIGTERM, wait: float = 30, group: bool = True
) -> None:
    """``first`` (SIGTERM) to the whole group (or, ``group=False``, to its leader alone, which
    stops its own children), then SIGKILL to the group; returns once it has exited."""
    for sig, seconds in ((first, wait), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            if group or sig == signal.SIGKILL:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            continue
        if not group:  # anything of its group it left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    alive: Callable[[], str | None],
    timeout: float,
    what: str,
) -> str | None:
    """Poll ``ready`` each second; ``alive`` names a dead part (or None). None when ready."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = alive()
        if dead:
            return f"{what}: {dead}"
        if time.monotonic() > deadline:
            return f"{what}: not within {timeout:.0f} s"
        time.sleep(1)
    return None


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the Celery stack: ``worker<N>@<host>`` on a worker.

    Every worker of `make airflow-celery` runs on one host; naming the worker in each task
    instance's host lets the UI and the REST API say which worker ran which try.
    """
    name = os.environ.get("RECOPS_WORKER_NAME")
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host
