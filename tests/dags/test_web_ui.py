"""The web UI, for real: what `make airflow` starts, driven by headless Chromium.

`dags/standalone.py` (the `make airflow` launcher) starts Airflow standalone (api-server,
scheduler, dag-processor, triggerer; SQLite, LocalExecutor) on a free loopback port with
a temporary home, over a temporary loop workspace holding two appended weeks. A
recops_retrain run is triggered through the REST API (training: tests/dags/tiny_repro.py;
serving: the /readyz stand-in) and the DAG unpaused. Chromium logs in with the printed
password, checks the DAG list (every DAG, no import error), opens the grid of the
finished run, and opens the Evidently drift report pipelines.monitoring wrote for week 1.
Screenshots go to artifacts/screenshots/. Everything started here is stopped at the end;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.core.config import load_params
from pipelines.core.paths import PROJECT, Layout
from pipelines.loop import stream
from pipelines.loop.steps import ingest_batch, monitor_batch
from tests.dags.test_loop import READY, TINY_REPRO
from tests.monitoring.synthetic import synthetic_raw

# 2-3 min on 2 busy cores (Airflow's four components start in ~1 min): too slow for `make test`
pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAUNCHER = PROJECT.root / "dags" / "standalone.py"
SHOTS = PROJECT.artifacts / "screenshots"
DAG_IDS = ("recops_ingest", "recops_monitor", "recops_retrain")
STARTUP_S, RUN_S, PAGE_MS = 300, 300, 60_000


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lines(feed, out: queue.Queue) -> None:
    for line in feed:
        out.put(line)


def _workspace(root: Path) -> Layout:
    """Weeks 0 and 1 appended by the loop's own ingest step; week 1 monitored (the report)."""
    params = yaml.safe_load(PROJECT.params.read_text())
    params["monitoring"].update(min_events=50, reference_rows=1000)
    params["replay"]["initial_weeks"] = 2
    params["retrain"]["ready_timeout"] = 30
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    ws = Layout(root)
    loaded = load_params(ws.params)
    feed = stream.cut(synthetic_raw(events_per_week=300, weeks=3, initial_weeks=1), initial_weeks=2)
    for week in (0, 1):
        batch = stream.drop_week(feed, ws.landing, week)
        result = ingest_batch(ws, batch.name, loaded.ingest, loaded.replay)
        assert result["status"] == "accepted"
    assert monitor_batch(ws, "week-01", loaded.monitoring)["status"] == "no_drift"
    return ws


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    ws = _workspace(tmp / "ws")
    port = free_port()
    env = {
        **os.environ,
        "RECOPS_WORKSPACE": str(ws.root),
        "RECOPS_REPRO_CMD": f"{sys.executable} {TINY_REPRO}",
        "RECOPS_SERVE_CMD": READY,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    for key in [k for k in env if k.startswith("AIRFLOW")]:  # the pytest session's own Airflow
        del env[key]
    command = [sys.executable, str(LAUNCHER), "--home", str(tmp / "home"), "--port", str(port)]
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
    try:
        deadline = time.monotonic() + STARTUP_S
        while not any(line.strip().startswith("login:") for line in seen):
            assert process.poll() is None or not lines.empty(), "".join(seen)[-3000:]
            assert time.monotonic() < deadline, f"no login after {STARTUP_S} s: {seen[-20:]}"
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        url = next(line.split()[-1] for line in seen if line.strip().startswith("UI:"))
        login = next(line for line in seen if line.strip().startswith("login:"))
        user, password = login.split()[1], login.split()[3]
        yield url, user, password, ws
    finally:
        process.send_signal(signal.SIGTERM)  # the launcher stops every Airflow component
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        served = (ws.serving.exists() and yaml.safe_load(ws.serving.read_text())) or None
        if served:  # the stand-in server the retrain run deployed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(served["pid"]), signal.SIGTERM)


def _api(url: str, user: str, password: str) -> httpx.Client:
    token = httpx.post(
        f"{url}/auth/token", json={"username": user, "password": password}, timeout=20
    )
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=f"{url}/api/v2", headers=headers, timeout=30)


def _wait(what: str, check, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(2)
    pytest.fail(f"{what}: not within {seconds:.0f} s")


def test_the_ui_shows_every_dag_and_the_grid_of_a_finished_retrain(airflow):
    url, user, password, ws = airflow
    with _api(url, user, password) as api:
        dags = _wait(
            "all three DAGs parsed",
            lambda: (lambda r: set(DAG_IDS) <= {d["dag_id"] for d in r["dags"]} and r)(
                api.get("/dags").json()
            ),
            120,
        )
        assert {d["dag_id"] for d in dags["dags"]} == set(DAG_IDS)
        assert api.get("/importErrors").json()["total_entries"] == 0
        pools = {p["name"]: p["slots"] for p in api.get("/pools").json()["pools"]}
        assert pools["recops_dvc"] == 1
        run = api.post("/dags/recops_retrain/dagRuns", json={"logical_date": None})
        assert run.status_code == 200, run.text
        assert api.patch("/dags/recops_retrain", json={"is_paused": False}).status_code == 200

        def finished():
            runs = api.get("/dags/recops_retrain/dagRuns").json()["dag_runs"]
            done = all(r["state"] in ("success", "failed") for r in runs)
            return done and {r["dag_run_id"]: r["state"] for r in runs}

        # unpausing also schedules the latest Monday's run (catchup=False): whichever runs
        # first retrains the data version, any other finds it done and does nothing
        runs = _wait("every recops_retrain run", finished, RUN_S)
        states = {
            run_id: {
                t["task_id"]: t["state"]
                for t in api.get(f"/dags/recops_retrain/dagRuns/{run_id}/taskInstances").json()[
                    "task_instances"
                ]
            }
            for run_id in runs
        }
    assert set(runs.values()) == {"success"}, states
    retrained = [run_id for run_id, tasks in states.items() if tasks["repro"] == "success"]
    assert len(retrained) == 1, states  # keyed by data version: one retrain, however triggered
    run_id = retrained[0]
    assert states[run_id] == dict.fromkeys(
        ("new_data_version", "repro", "deploy", "record"), "success"
    )
    for other in set(runs) - {run_id}:
        assert states[other]["repro"] == "skipped", states
    assert ws.serving.exists()  # the run deployed the blessed model

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "needs Debian's chromium: `make test` installs it as root"
    from playwright import sync_api

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_MS)
            page.goto(url)
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.goto(f"{url}/dags")
            for dag_id in DAG_IDS:
                page.get_by_text(dag_id, exact=True).first.wait_for()
            listing = page.inner_text("body")
            page.screenshot(path=str(SHOTS / "airflow_dags.png"), full_page=True)
            page.goto(f"{url}/dags/recops_retrain/runs/{run_id}")
            for task_id in ("new_data_version", "repro", "deploy", "record"):
                page.get_by_text(task_id, exact=True).first.wait_for()
            grid = page.inner_text("body")
            page.screenshot(path=str(SHOTS / "airflow_retrain_grid.png"), full_page=True)

            report = ws.monitoring / "week-01" / "report.html"
            page.goto(report.as_uri())
            page.wait_for_selector("#recops-decision")
            page.get_by_text("Dataset Drift", exact=False).first.wait_for()
            evidently = page.inner_text("body")
            page.screenshot(path=str(SHOTS / "evidently_report.png"), full_page=True)
        finally:
            browser.close()
    assert "import error" not in listing.lower()
    assert all(dag_id in listing for dag_id in DAG_IDS)
    assert run_id in grid or "success" in grid.lower()
    assert "no_drift" in evidently and "item_popularity" in evidently
