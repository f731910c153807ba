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

The settings, tables, pools and health checks are dags/launch.py's, shared with
dags/celery_stack.py (`make airflow-celery`). Not a DAG file: dags/.airflowignore keeps the
dag-processor from parsing it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

# run as a script: dags/ is sys.path[0], so the shared launcher code imports by name
from launch import BIN, DAGS, HOST, POOLS, ROOT, USER, environment, health, healthy, prepare, stop


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
