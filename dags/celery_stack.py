"""`make airflow-celery`: Airflow 3 on Celery, PostgreSQL and Redis, on 127.0.0.1 only.

    python dags/celery_stack.py [--home airflow_home/celery] [--port 8080] [--workers 2]
                                [--concurrency 2] [--unpaused] [--timeout 300] [--pgdata DIR]

What `make airflow` runs in one `airflow standalone` (SQLite, LocalExecutor), this runs as
separate servers, the way a team deploys it: a PostgreSQL cluster as the metadata database
(and Celery's result backend), Redis as the Celery broker, then the api-server, scheduler,
dag-processor, triggerer and ``--workers`` Celery workers (``worker1``, ``worker2``, ...),
each in its own process group. All share one JWT secret (the api-server checks the tokens
the scheduler signs for each task), one Fernet key and the same DAGs, pool and login as
`make airflow`.

PostgreSQL and Redis come from Debian (`apt-get install -y postgresql redis-server`; the
Makefile target installs them when run as root). Neither is the system's service: the
cluster is this project's own (``initdb`` into ``<home>/postgres``, or ``--pgdata``; run as
the ``postgres`` user when this script runs as root, since PostgreSQL refuses root), and
both listen on free loopback ports chosen at each start, with passwords. Secrets are made
once into ``<home>/secrets.json`` (mode 0600), the ports and process ids of every part are
written to ``<home>/components.json``, and each part logs to ``<home>/logs/<part>.log``.

No part listens beyond 127.0.0.1: the workers and the triggerer run without their log
servers (which bind every interface); the api-server reads the task logs from
``<home>/logs`` (one disk). A task instance's host is ``worker<N>@<host>``, so the UI and
the REST API tell the workers apart.

Ctrl-C or SIGTERM stops every part (workers first, PostgreSQL last). Not a DAG file:
dags/.airflowignore keeps the dag-processor from parsing it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
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
    wait_until,
)

DATABASE = "airflow"  # the PostgreSQL role and database
PG_USER = "postgres"  # who runs the cluster when this script runs as root
# what must report healthy (the api-server's view) before the stack is up
PARTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
WORKER_ENV = "RECOPS_WORKER_NAME"  # read by launch.worker_hostname


class StackError(RuntimeError):
    """A part could not be installed, started or reached; the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def load_secrets(path: Path) -> dict[str, str]:
    """The stack's secrets, made once (0600): the JWT secret, the Fernet key, two passwords."""
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    made = {
        "jwt_secret": secrets.token_urlsafe(32),
        "fernet_key": Fernet.generate_key().decode(),
        "postgres_password": secrets.token_urlsafe(24),
        "redis_password": secrets.token_urlsafe(24),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(made, handle, indent=2)
    return made


# ---- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise StackError(
        "PostgreSQL is not installed: `apt-get install -y postgresql` (as root; "
        "`make airflow-celery` does it when run as root)"
    )


def _as_postgres() -> dict:
    """Popen arguments that run a PostgreSQL binary as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": PG_USER, "group": PG_USER, "extra_groups": []}


def init_cluster(pgdir: Path, password: str, log_path: Path) -> Path:
    """``initdb`` once into ``pgdir/data``: role ``airflow``, passwords on TCP; the data dir."""
    data = pgdir / "data"
    if (data / "PG_VERSION").exists():
        return data
    pgdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(pgdir, PG_USER, PG_USER)
    pwfile = pgdir / ".initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, PG_USER, PG_USER)
    command = [
        str(postgres_bin() / "initdb"),
        "-D",
        str(data),
        "-U",
        DATABASE,
        f"--pwfile={pwfile}",
        "--auth-local=trust",  # the socket lives in pgdir, which only its owner can enter
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--no-instructions",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, **_as_postgres()
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with open(log_path, "a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StackError(
            f"initdb {data} failed: {last[0]} (a root run needs --pgdata somewhere "
            f"the {PG_USER} user can reach, e.g. under /var/tmp)"
        )
    return data


def start_postgres(pgdir: Path, port: int, log_path: Path) -> subprocess.Popen:
    data = pgdir / "data"
    command = [
        str(postgres_bin() / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        f"unix_socket_directories={pgdir}",
        "-c",
        "max_connections=200",  # every Airflow part holds a small pool, Celery's backend too
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **_as_postgres(),
        )


def postgres_ready(port: int, password: str) -> bool:
    import psycopg

    try:
        psycopg.connect(
            host=HOST,
            port=port,
            user=DATABASE,
            password=password,
            dbname="postgres",
            connect_timeout=2,
        ).close()
        return True
    except psycopg.OperationalError:
        return False


def create_database(port: int, password: str) -> None:
    import psycopg

    with psycopg.connect(
        host=HOST, port=port, user=DATABASE, password=password, dbname="postgres", autocommit=True
    ) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if found is None:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')


# ---- Redis -----------------------------------------------------------------------------------


def start_redis(directory: Path, port: int, password: str, log_path: Path) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if not server:
        raise StackError(
            "Redis is not installed: `apt-get install -y redis-server` (as root; "
            "`make airflow-celery` does it when run as root)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"  # the password stays out of the process list
    config.write_text(
        f"bind {HOST}\nport {port}\nprotected-mode yes\nrequirepass {password}\n"
        f'dir {directory}\nsave ""\nappendonly no\ndaemonize no\n'
    )
    config.chmod(0o600)
    return start([server, str(config)], dict(os.environ), log_path)


def redis_ready(port: int, password: str) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=port, password=password, socket_timeout=2).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


# ---- the stack -------------------------------------------------------------------------------


class Stack:
    """Every part, started in order and stopped in reverse; ``components.json`` says where."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.home = args.home.resolve()
        self.logs = self.home / "logs"
        self.args = args
        self.parts: dict[str, subprocess.Popen] = {}
        self.ports = {"api": args.port, "postgres": free_port(), "redis": free_port()}
        self.secrets = load_secrets(self.home / "secrets.json")

    # -- what every Airflow part shares
    def env(self) -> dict[str, str]:
        where = (
            f"{DATABASE}:{self.secrets['postgres_password']}"
            f"@{HOST}:{self.ports['postgres']}/{DATABASE}"
        )
        pg = f"postgresql+psycopg://{where}"  # psycopg 3: one driver, sync and async
        settings = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{where}",
            "AIRFLOW__CELERY__BROKER_URL": (
                f"redis://:{self.secrets['redis_password']}@{HOST}:{self.ports['redis']}/0"
            ),
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.args.concurrency),
            # Airflow's own default, said explicitly: a message unacknowledged this long is
            # delivered again (a task whose worker died is retried by the scheduler far sooner)
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt_secret"],
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet_key"],
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
            # worker<N>@<host> on each task instance: which worker ran which try
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "launch.worker_hostname",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(DAGS), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        return environment(self.home, self.ports["api"], self.args.unpaused, **settings)

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.parts[name] = start(command, env, self.logs / f"{name}.log")

    def dead(self) -> str | None:
        for name, process in self.parts.items():
            if process.poll() is not None:
                return (
                    f"{name} exited ({process.returncode}); its log ends:\n"
                    f"{tail(self.logs / f'{name}.log')}"
                )
        return None

    def _wait(self, ready, what: str) -> None:
        problem = wait_until(ready, self.dead, self.args.timeout, what)
        if problem:
            raise StackError(problem)

    def up(self) -> str:
        """Start every part; returns the admin password once all report healthy."""
        self.logs.mkdir(parents=True, exist_ok=True)
        pgdir = (self.args.pgdata or self.home / "postgres").resolve()
        password = self.secrets["postgres_password"]
        init_cluster(pgdir, password, self.logs / "postgres.log")
        self.parts["postgres"] = start_postgres(
            pgdir, self.ports["postgres"], self.logs / "postgres.log"
        )
        self._wait(lambda: postgres_ready(self.ports["postgres"], password), "postgres")
        create_database(self.ports["postgres"], password)
        self.parts["redis"] = start_redis(
            self.home / "redis",
            self.ports["redis"],
            self.secrets["redis_password"],
            self.logs / "redis.log",
        )
        self._wait(
            lambda: redis_ready(self.ports["redis"], self.secrets["redis_password"]), "redis"
        )

        env = self.env()
        admin = prepare(env)  # migrates the PostgreSQL metadata database, pools, password
        airflow = str(BIN / "airflow")
        self._start(
            "api-server",
            [airflow, "api-server", "--host", HOST, "--port", str(self.ports["api"])],
            env,
        )
        self._start("scheduler", [airflow, "scheduler", "--skip-serve-logs"], env)
        self._start("dag-processor", [airflow, "dag-processor"], env)
        self._start("triggerer", [airflow, "triggerer", "--skip-serve-logs"], env)
        for n in range(1, self.args.workers + 1):
            name = f"worker{n}"
            command = [airflow, "celery", "worker", "--celery-hostname", name, "--skip-serve-logs"]
            self._start(name, command, {**env, WORKER_ENV: name})
        self.write_components()
        self._wait(lambda: healthy(health(self.ports["api"]), PARTS), "airflow")
        self._wait(self.workers_ready, "celery workers")
        return admin

    def workers(self) -> list[str]:
        return [name for name in self.parts if name.startswith("worker")]

    def workers_ready(self) -> bool:
        """Every worker answers a ping over the broker."""
        from airflow.providers.celery.executors.celery_executor_utils import app

        try:
            answers = app.control.ping(timeout=2)
        except Exception:  # the broker is up (checked): a worker is still starting
            return False
        names = {name.split("@", 1)[-1] for answer in answers for name in answer}
        return set(self.workers()) <= names

    def write_components(self) -> None:
        record = {
            "ports": self.ports,
            "parts": {name: process.pid for name, process in self.parts.items()},
            "workers": self.workers(),
            "logs": str(self.logs),
        }
        path = self.home / "components.json"
        path.write_text(json.dumps(record, indent=2) + "\n")

    def watch(self) -> int:
        """Until a part other than a worker exits (then 1). A worker that dies is said once:
        the scheduler retries its tasks on the others once their heartbeats time out."""
        told: set[str] = set()
        while True:
            for name, process in self.parts.items():
                if process.poll() is None or name in told:
                    continue
                told.add(name)
                print(f"{name} exited ({process.returncode})", file=sys.stderr, flush=True)
                if name not in self.workers():
                    print(tail(self.logs / f"{name}.log"), file=sys.stderr)
                    return 1
            time.sleep(2)

    def down(self) -> None:
        """Workers first (a warm shutdown lets a running task end), PostgreSQL last."""
        for name in reversed(list(self.parts)):
            first = signal.SIGINT if name == "postgres" else signal.SIGTERM  # fast shutdown
            began = time.monotonic()
            # a Celery worker's warm shutdown stops its pool itself; a TERM to the whole
            # group kills the pool under it and the worker waits out the timeout
            stop(self.parts[name], first=first, group=name not in self.workers())
            print(f"stopped {name} in {time.monotonic() - began:.1f} s", flush=True)
        self.parts.clear()


def main(argv: list[str] | None = None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=ROOT / "airflow_home" / "celery")
    parser.add_argument("--port", type=int, default=8080, help="the api-server (UI, REST API)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers")
    parser.add_argument("--concurrency", type=int, default=2, help="tasks at once per worker")
    parser.add_argument("--unpaused", action="store_true", help="DAGs start unpaused")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait per part")
    parser.add_argument("--pgdata", type=Path, help="the PostgreSQL cluster's folder")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.concurrency < 1:
        parser.error("--workers and --concurrency must be at least 1")
    stack = Stack(args)
    signal.signal(signal.SIGTERM, lambda *_: (stack.down(), sys.exit(0)))
    try:
        password = stack.up()
        ports = stack.ports
        workers = ", ".join(f"{w} (pid {stack.parts[w].pid})" for w in stack.workers())
        print(
            f"Airflow is up (CeleryExecutor, PostgreSQL, Redis; {HOST} only)\n"
            f"  UI:       http://{HOST}:{ports['api']}\n"
            f"  login:    {USER} / {password}\n"
            f"  DAGs:     {DAGS} ({'unpaused' if args.unpaused else 'paused: unpause in the UI'})\n"
            f"  pools:    {', '.join(f'{name} ({slots})' for name, slots, _ in POOLS)}\n"
            f"  workers:  {workers}, concurrency {args.concurrency}\n"
            f"  postgres: {HOST}:{ports['postgres']}  redis: {HOST}:{ports['redis']}\n"
            f"  secrets:  {stack.home / 'secrets.json'}\n"
            f"  logs:     {stack.logs}\n"
            "Ctrl-C stops every part.",
            flush=True,
        )
        return stack.watch()
    except StackError as err:
        print(f"airflow-celery: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(Exception):
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
