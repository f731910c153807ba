"""The loop on Airflow's CeleryExecutor: PostgreSQL, Redis, two workers, driven by the REST API.

`dags/celery_stack.py` (what `make airflow-celery` runs) starts a PostgreSQL cluster and a
Redis server of its own on free loopback ports, then the api-server, scheduler,
dag-processor, triggerer and two Celery workers over a temporary loop workspace, the DAGs
unpaused. The story, through the REST API only (trigger a run, poll the states):

1. week 0 lands; an ingest run appends it; its `data` event schedules a monitor run;
2. weeks 1, 2 (new items: drift) and 3 land; an ingest run appends them one by one, and
   once the first is in data/ while others still wait in landing/, the worker running
   `append` is killed with SIGKILL (every process of its session: the host is gone). The
   scheduler sees the task's heartbeat stop, and its retry runs on the other worker;
3. the `data` event schedules the monitor, its `drift` event the retrain (training:
   tests/dags/tiny_repro.py; serving: the /readyz stand-in), which serves the new model.

Then: every batch is in data/ledger.json exactly once, the killed try ran on one worker
and the retry on the other, and every task after the kill ran on the survivor. Everything
started here is stopped at the end (checked); every wait is bounded.

Needs PostgreSQL and Redis (`make test-celery` installs them as root; CI runs it): without
them the test is skipped, unless RECOPS_CELERY_REQUIRED=1 (set by `make test-celery`),
where it fails. ~4-6 min on 2 busy cores: not part of `make test`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.core.paths import PROJECT, Layout
from pipelines.data.snapshot import read_ledger
from pipelines.loop import stream
from pipelines.loop.deploy import is_ready
from tests.dags.test_loop import READY, TINY_REPRO
from tests.monitoring.synthetic import synthetic_raw

pytestmark = [pytest.mark.celery, pytest.mark.slow]

LAUNCHER = PROJECT.root / "dags" / "celery_stack.py"
DAG_IDS = ("recops_ingest", "recops_monitor", "recops_retrain")
DONE = ("success", "failed")
# a killed task is noticed once its heartbeat is this old (Airflow's default is 300 s)
HEARTBEAT_TIMEOUT = 45
STARTUP_S, RUN_S = 420, 420


def _installed() -> bool:
    return bool(shutil.which("redis-server")) and any(Path("/usr/lib/postgresql").glob("*/bin"))


if not _installed() and os.environ.get("RECOPS_CELERY_REQUIRED") != "1":
    pytestmark.append(
        pytest.mark.skip(reason="PostgreSQL or Redis missing: `make test-celery` installs them")
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_members(sid: int) -> list[int]:
    """Every live process whose session is ``sid`` (a part and all it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6: session; skip zombies
                members.append(int(entry.name))
    return members


def kill_session(sid: int) -> list[int]:
    killed = session_members(sid)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed


def _lines(feed, out: queue.Queue) -> None:
    for line in feed:
        out.put(line)


def _wait(what: str, check, seconds: float, every: float = 2.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"{what}: not within {seconds:.0f} s")


def _ledger(ws: Layout) -> list[str]:
    """The batch names in data/ledger.json (data/ is swapped whole: retry a missed read)."""
    for _ in range(20):
        try:
            return [e["batch"] for e in read_ledger(ws.data)]
        except (OSError, ValueError):
            time.sleep(0.1)
    return [e["batch"] for e in read_ledger(ws.data)]


class Api:
    """The REST API as the admin user, with the few calls the story needs."""

    def __init__(self, url: str, user: str, password: str):
        token = httpx.post(
            f"{url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        assert token.status_code == 201, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        self.client = httpx.Client(base_url=f"{url}/api/v2", headers=headers, timeout=30)

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def trigger(self, dag_id: str) -> str:
        response = self.client.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]

    def settled(self, dag_id: str, at_least: int = 1) -> list[dict] | None:
        """Every run of the DAG, once there are ``at_least`` and none is still going."""
        runs = self.runs(dag_id)
        done = len(runs) >= at_least and all(r["state"] in DONE for r in runs)
        return runs if done else None

    def tasks(self, dag_id: str, run_id: str = "~", **params) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.get(path, limit=100, **params)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        return self.get(path)["task_instances"]


def _workspace(root: Path) -> Layout:
    params = yaml.safe_load(PROJECT.params.read_text())
    params["monitoring"].update(min_events=50, reference_rows=1000)
    params["replay"]["initial_weeks"] = 2
    params["retrain"]["ready_timeout"] = 30
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return Layout(root)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("celery")
    ws = _workspace(tmp / "ws")
    home = tmp / "home"
    # pytest's folders are private to root; the cluster runs as `postgres` when we are root
    pgdata = Path(tempfile.mkdtemp(prefix="recops-pg-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "RECOPS_WORKSPACE": str(ws.root),
        "RECOPS_REPRO_CMD": f"{sys.executable} {TINY_REPRO}",
        "RECOPS_SERVE_CMD": READY,
        "BENTOML_DO_NOT_TRACK": "True",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    }
    command = [
        sys.executable,
        str(LAUNCHER),
        "--home",
        str(home),
        "--port",
        str(port),
        "--pgdata",
        str(pgdata),
        "--unpaused",
        "--timeout",
        str(STARTUP_S),
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    parts: dict[str, int] = {}
    try:
        deadline = time.monotonic() + STARTUP_S + 60
        while not any(line.strip().startswith("login:") for line in seen):
            assert process.poll() is None or not lines.empty(), "".join(seen)[-3000:]
            assert time.monotonic() < deadline, f"no login after {STARTUP_S} s: {seen[-20:]}"
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        components = json.loads((home / "components.json").read_text())
        parts = components["parts"]
        url = next(line.split()[-1] for line in seen if line.strip().startswith("UI:"))
        login = next(line for line in seen if line.strip().startswith("login:"))
        user, password = login.split()[1], login.split()[3]
        print(f"celery stack up in {time.monotonic() - started:.0f} s")
        yield {"api": Api(url, user, password), "ws": ws, "home": home, "parts": parts}
    finally:
        process.send_signal(signal.SIGTERM)  # the launcher stops every part, PostgreSQL last
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        said = []
        while not lines.empty():  # what the launcher said after the login: exits, stops
            said.append(lines.get().rstrip())
            print(said[-1])
        # each part stopped on its signal, before the launcher's SIGKILL at 30 s (a worker
        # whose task left a child holding the task's socket waits out the 30 s)
        stops = [line.split() for line in said if line.startswith("stopped ")]
        slow = {words[1]: float(words[3]) for words in stops if float(words[3]) >= 30}
        served = (ws.serving.exists() and json.loads(ws.serving.read_text())) or None
        if served:  # the stand-in server the retrain run deployed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(served["pid"]), signal.SIGTERM)
        time.sleep(1)
        left = {name: session_members(pid) for name, pid in parts.items()}
        left = {name: pids for name, pids in left.items() if pids}
        for pids in left.values():  # never leave a server behind, even when the test fails
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(pgdata, ignore_errors=True)
        assert not left, f"still running after the launcher stopped: {left}"
        assert stops and not slow, f"parts that had to be killed: {slow or said}"


class Story:
    """The loop's steps, run once each, in order; each test asserts on what one step saw."""

    def __init__(self, stack: dict):
        self.api, self.ws, self.parts = stack["api"], stack["ws"], stack["parts"]
        self.feed = stream.cut(synthetic_raw(events_per_week=300, weeks=4), initial_weeks=2)
        self.seen: dict[str, dict] = {}

    def step(self, name: str) -> dict:
        order = ["startup", "initial", "kill"]
        for earlier in order[: order.index(name) + 1]:
            if earlier not in self.seen:
                self.seen[earlier] = getattr(self, f"_{earlier}")()
        return self.seen[name]

    def _startup(self) -> dict:
        """The DAGs parse; unpausing schedules an ingest run and the latest Monday's retrain
        run, on an empty workspace: both find nothing to do."""
        api = self.api
        _wait(
            "all three DAGs parsed",
            lambda: set(DAG_IDS) <= {d["dag_id"] for d in api.get("/dags")["dags"]},
            180,
        )
        errors = api.get("/importErrors")["total_entries"]
        ingest = _wait("the scheduled ingest run", lambda: api.settled("recops_ingest"), RUN_S)
        retrain = _wait("the scheduled retrain run", lambda: api.settled("recops_retrain"), RUN_S)
        return {"errors": errors, "ingest": ingest, "retrain": retrain}

    def _initial(self) -> dict:
        api, ws = self.api, self.ws
        runs = len(api.runs("recops_ingest"))
        stream.drop_week(self.feed, ws.landing, 0)
        run_id = api.trigger("recops_ingest")
        ingest = _wait("ingest of week 0", lambda: api.settled("recops_ingest", runs + 1), RUN_S)
        monitor = _wait("the monitor run of week 0", lambda: api.settled("recops_monitor"), RUN_S)
        return {
            "run": next(r for r in ingest if r["dag_run_id"] == run_id),
            "ledger": _ledger(ws),
            "monitor": monitor,
            "tasks": api.tasks("recops_ingest", run_id),
        }

    def _kill(self) -> dict:
        api, ws = self.api, self.ws
        before = _ledger(ws)
        earlier = {
            dag_id: {r["dag_run_id"] for r in api.runs(dag_id)}
            for dag_id in ("recops_monitor", "recops_retrain")
        }
        landed = [
            stream.drop_week(self.feed, ws.landing, 1).name,
            stream.drop_week(self.feed, ws.landing, 2, shifted="new-items").name,
            stream.drop_week(self.feed, ws.landing, 3).name,
        ]
        api.trigger("recops_ingest")

        def mid_append() -> dict | None:
            """The running `append` once a batch is in data/ and another still waits."""
            running = api.tasks("recops_ingest", task_id="append", state="running")
            if not running or not (running[0].get("hostname") or "").startswith("worker"):
                return None
            ledger = _ledger(ws)
            waiting = [name for name in landed if (ws.landing / name).is_dir()]
            if len(ledger) > len(before) and waiting:
                return {"ti": running[0], "ledger": ledger, "waiting": waiting}
            return None

        moment = _wait("append mid-way through the batches", mid_append, RUN_S, every=0.2)
        worker = moment["ti"]["hostname"].split("@", 1)[0]
        killed = kill_session(self.parts[worker])
        killed_at = time.monotonic()
        run_id = moment["ti"]["dag_run_id"]

        ingest = _wait(
            "the ingest run after the kill",
            lambda: (lambda runs: runs and runs[0]["state"] in DONE and runs)(
                [r for r in api.runs("recops_ingest") if r["dag_run_id"] == run_id]
            ),
            RUN_S,
        )[0]
        recovered_s = time.monotonic() - killed_at

        def new_run(dag_id: str) -> dict | None:
            """The DAG's one run since the kill step began (an asset event scheduled it)."""
            runs = api.settled(dag_id, len(earlier[dag_id]) + 1)
            fresh = [r for r in runs or [] if r["dag_run_id"] not in earlier[dag_id]]
            return fresh[0] if len(fresh) == 1 else None

        monitor = _wait("the monitor run of weeks 1-3", lambda: new_run("recops_monitor"), RUN_S)
        retrain = _wait("the retrain the drift scheduled", lambda: new_run("recops_retrain"), RUN_S)
        later = [
            ti
            for run in (monitor, retrain)
            for ti in api.tasks(run["dag_id"], run["dag_run_id"])
            if ti.get("hostname")
        ]
        return {
            "landed": landed,
            "before": before,
            "worker": worker,
            "killed": killed,
            "moment": moment,
            "run": ingest,
            "recovered_s": recovered_s,
            "tries": api.tries("recops_ingest", run_id, "append"),
            "monitor": monitor,
            "retrain": retrain,
            "retrain_tasks": {
                ti["task_id"]: ti["state"]
                for ti in api.tasks("recops_retrain", retrain["dag_run_id"])
            },
            "later_hosts": sorted({ti["hostname"].split("@", 1)[0] for ti in later}),
            "ledger": _ledger(ws),
            "serving": json.loads(ws.serving.read_text()) if ws.serving.exists() else None,
            "lineage": json.loads(ws.lineage.read_text()) if ws.lineage.exists() else None,
        }


@pytest.fixture(scope="module")
def story(stack):
    return Story(stack)


def test_the_stack_parses_every_dag_and_the_first_runs_find_nothing_to_do(story):
    seen = story.step("startup")
    assert seen["errors"] == 0
    assert {r["state"] for r in seen["ingest"]} == {"success"}
    assert {r["state"] for r in seen["retrain"]} == {"success"}  # short-circuited: no data


def test_week_0_is_appended_on_a_celery_worker_and_schedules_the_monitor(story):
    seen = story.step("initial")
    assert seen["run"]["state"] == "success", seen["tasks"]
    assert seen["ledger"] == ["week-00"]
    assert [r["state"] for r in seen["monitor"]] == ["success"]
    hosts = {ti["hostname"].split("@", 1)[0] for ti in seen["tasks"]}
    assert hosts <= {"worker1", "worker2"}, hosts  # the Celery workers ran them


def test_a_worker_killed_mid_append_loses_nothing_and_appends_nothing_twice(story):
    seen = story.step("kill")
    assert seen["killed"], "no process of the worker was found to kill"
    assert seen["moment"]["waiting"], "the kill came after every batch was appended"
    assert seen["run"]["state"] == "success", seen["tries"]
    tries = sorted(seen["tries"], key=lambda t: t["try_number"])
    assert [t["try_number"] for t in tries] == [1, 2]
    first, retry = (t["hostname"].split("@", 1)[0] for t in tries)
    assert first == seen["worker"] and retry != seen["worker"]  # retried on the other worker
    assert tries[-1]["state"] == "success"
    # every batch exactly once, in order: the retry answered the moved ones from the ledger
    assert seen["ledger"] == ["week-00", *seen["landed"]]
    print(
        f"killed {seen['worker']} ({len(seen['killed'])} processes) with "
        f"{seen['moment']['ledger'][1:]} appended and {seen['moment']['waiting']} waiting; "
        f"the run ended {seen['recovered_s']:.0f} s later"
    )


def test_after_the_kill_the_survivor_runs_the_monitor_and_the_retrain(story):
    seen = story.step("kill")
    assert seen["monitor"]["state"] == "success"
    assert seen["retrain"]["state"] == "success", seen["retrain_tasks"]
    assert seen["retrain_tasks"] == dict.fromkeys(
        ("new_data_version", "repro", "deploy", "record"), "success"
    )
    survivor = ({"worker1", "worker2"} - {seen["worker"]}).pop()
    assert seen["later_hosts"] == [survivor]
    assert len(seen["lineage"]["runs"]) == 1
    assert is_ready(seen["serving"]["port"])
