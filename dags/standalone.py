"""`make airflow`: Airflow 3 standalone with this project's DAGs, on 127.0.0.1 only.

    python dags/standalone.py [--home airflow_home] [--port 8080] [--unpaused] [--timeout 300]

Airflow's api-server (web UI and REST API), scheduler, dag-processor and triggerer, each
started here in its own process group, with SQLite and the LocalExecutor, as `airflow
standalone` would run them but without its log servers: those bind every interface
(Airflow hard-codes it), and with the LocalExecutor the api-server reads the task logs
from disk anyway (`--skip-serve-logs`). Every file is under --home (airflow_home/,
git-ignored). Before it starts, this script creates the
metadata tables, the pool the DAGs use (recops_dvc, one slot: `dvc repro` and appends
to data/ one at a time, since concurrent DVC runs in one workspace lock each other and a
training run must not see data/ change) and the simple auth manager's `admin`
password, which Airflow generates once into
<home>/simple_auth_manager_passwords.json.generated. When the API reports a healthy
scheduler and dag-processor it prints the URL and the login. Ctrl-C or SIGTERM stops
every component. DAGs start paused, as Airflow creates them, unless --unpaused.

The settings, tables, pools and health checks are dags/launch.py's, shared with
dags/celery_stack.py (`make airflow-celery`). Not a DAG file: dags/.airflowignore keeps the
dag-processor from parsing it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

# run as a script: dags/ is sys.path[0], so the shared launcher code imports by name
from launch import (
    BIN,
    DAGS,
    HOST,
    POOLS,
    ROOT,
    USER,
    environment,
    health,
    healthy,
    prepare,
    start,
    stop,
    tail,
)


def jwt_secret(path: Path) -> str:
    """The home's JWT secret, made once (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


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
    # one JWT secret for every component: the api-server checks the tokens the scheduler's
    # task runners are given (standalone would share one in memory; separate processes
    # each make their own unless told)
    env = {
        **environment(home, args.port, args.unpaused),
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret(home / "jwt_secret"),
    }
    password = prepare(env)
    airflow = str(BIN / "airflow")
    commands = {
        "api-server": [airflow, "api-server"],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    logs = {name: home / "logs" / f"{name}.log" for name in commands}
    parts = {name: start(command, env, logs[name]) for name, command in commands.items()}

    def stop_all() -> None:
        for process in parts.values():
            stop(process)

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        deadline = time.monotonic() + args.timeout
        while not healthy(health(args.port)):
            dead = [name for name, process in parts.items() if process.poll() is not None]
            if dead or time.monotonic() > deadline:
                for name in dead or parts:
                    print(f"--- {logs[name]}\n{tail(logs[name])}", file=sys.stderr)
                what = f"{', '.join(dead)} exited" if dead else "no health in time"
                print(f"airflow did not become healthy ({what})", file=sys.stderr)
                stop_all()
                return 1
            time.sleep(1)
        print(
            f"Airflow is up (SQLite, LocalExecutor, {HOST} only)\n"
            f"  UI:     http://{HOST}:{args.port}\n"
            f"  login:  {USER} / {password}\n"
            f"          (from {home / 'simple_auth_manager_passwords.json.generated'})\n"
            f"  DAGs:   {DAGS} ({'unpaused' if args.unpaused else 'paused: unpause in the UI'})\n"
            f"  pools:  {', '.join(f'{name} ({slots})' for name, slots, _ in POOLS)}\n"
            f"  logs:   {home / 'logs'}\n"
            "Ctrl-C stops every component.",
            flush=True,
        )
        while all(process.poll() is None for process in parts.values()):
            time.sleep(1)
        dead = [name for name, process in parts.items() if process.poll() is not None]
        print(f"airflow: {', '.join(dead)} exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
