"""`make airflow`: Airflow 3 standalone with this project's DAGs, on 127.0.0.1 only.

    python dags/standalone.py [--home airflow_home] [--port 8080] [--unpaused] [--timeout 300]

`airflow standalone` runs the api-server (web UI and REST API), scheduler, dag-processor
and triggerer under one parent, with SQLite and the LocalExecutor; every file it keeps
is under --home (airflow_home/, git-ignored). Before it starts, this script creates the
metadata tables, the pool the DAGs use (recops_dvc, one slot: `dvc repro` and appends
to data/ one at a time, since concurrent DVC runs in one workspace lock each other and a
training run must not see data/ change) and the simple auth manager's `admin`
password, which Airflow generates once into
<home>/simple_auth_manager_passwords.json.generated. When the API reports a healthy
scheduler and dag-processor it prints the URL and the login. Ctrl-C or SIGTERM stops
every component. DAGs start paused, as Airflow creates them, unless --unpaused.

Not a DAG file: dags/.airflowignore keeps the dag-processor from parsing it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DAGS = Path(__file__).resolve().parent
ROOT = DAGS.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # loopback only: the simple auth manager is for one developer's machine
# dvc repro and appends to data/ (with their `dvc add`): one at a time, since concurrent
# DVC runs in one workspace lock each other and a training run must not see data/ change
POOLS = (("recops_dvc", 1, "dvc repro and appends to data/, one at a time"),)
USER = "admin"


def environment(home: Path, port: int, unpaused: bool = False) -> dict[str, str]:
    """The Airflow settings of this project (AIRFLOW__SECTION__KEY variables)."""
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


def healthy(report: dict | None) -> bool:
    return bool(report) and all(
        (report.get(part) or {}).get("status") == "healthy"
        for part in ("metadatabase", "scheduler", "dag_processor")
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole group (standalone and the components it started), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=ROOT / "airflow_home")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--unpaused", action="store_true", help="DAGs start unpaused")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for health")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = environment(home, args.port, args.unpaused)
    password = prepare(env)
    log_path = home / "standalone.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() ends every component, nothing else
        )
    signal.signal(signal.SIGTERM, lambda *_: (stop(process), sys.exit(0)))
    try:
        deadline = time.monotonic() + args.timeout
        while not healthy(health(args.port)):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                print("\n".join(tail), file=sys.stderr)
                print(
                    f"airflow standalone did not become healthy; log: {log_path}", file=sys.stderr
                )
                stop(process)
                return 1
            time.sleep(1)
        print(
            f"Airflow is up (standalone: SQLite, LocalExecutor, {HOST} only)\n"
            f"  UI:     http://{HOST}:{args.port}\n"
            f"  login:  {USER} / {password}\n"
            f"          (from {home / 'simple_auth_manager_passwords.json.generated'})\n"
            f"  DAGs:   {DAGS} ({'unpaused' if args.unpaused else 'paused: unpause in the UI'})\n"
            f"  pools:  {', '.join(f'{name} ({slots})' for name, slots, _ in POOLS)}\n"
            f"  log:    {log_path}\n"
            "Ctrl-C stops every component.",
            flush=True,
        )
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
