"""The real thing: package a tiny model into a Bento, `bentoml serve` it on free loopback
ports, exercise every endpoint, attack it (random paths, a killed worker, a second
server from the same checkout), fuzz it with schemathesis (bounded, every check), open
Swagger in headless Chromium. Every request has a timeout; every server is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.core.paths import PROJECT
from tests.inference.tiny import USERS
from tests.services.conftest import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.redis]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIN = Path(sys.executable).parent
SCREENSHOT = PROJECT.artifacts / "screenshots" / "swagger.png"
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")

PACKAGE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipelines.core.config import Params
    from pipelines.core.io import write_json
    from pipelines.stages import package
    artifacts, home, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    # the gate stage's outputs before a first release: no comparison, the blend
    gate, blend = out.parent / "gate" / "gate.json", out.parent / "gate" / "blend.json"
    write_json({"comparison": None, "why": "no champion yet: the floors alone decide"}, gate)
    write_json({"weights": [0.1, 0.5, 0.9, 0.9]}, blend)
    package.run(
        Params(), selection=artifacts / "selection/selection.json",
        metrics=artifacts / "eval/metrics.json", coldstart=artifacts / "coldstart/metrics.json",
        models=artifacts / "models", features=artifacts / "features", split=artifacts / "split",
        embeddings=artifacts / "embeddings/items.npy", data_dvc=artifacts.parent / "data.dvc",
        gate=gate, blend=blend, out=out, bentoml_home=home,
    )
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def released(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Bento of the tiny model in a fresh store; the environment every server gets."""
    work = tmp_path_factory.mktemp("served")
    home = work / ".bentoml"  # a hidden folder, like the project's store: BentoML must cope
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "RECOPS_API_TOKEN": TOKEN,
        "PYTHONPATH": str(PROJECT.root),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RECOPS_BUNDLE_DIR", None)
    subprocess.run(
        [sys.executable, "-c", PACKAGE, str(artifacts), str(home), str(work / "release")],
        cwd=PROJECT.root,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {**env, "RECOPS_TEST_WORK": str(work)}


@contextlib.contextmanager
def serving(env: dict[str, str], name: str, **extra: str) -> Iterator[tuple[str, int]]:
    """`bentoml serve` the Bento on a free port until ready; (url, pid); always stopped."""
    work = Path(env["RECOPS_TEST_WORK"])
    port = free_port()
    log_path = work / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed below)
    command = [str(BIN / "bentoml"), "serve", "recops_recommender:latest"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        env={**env, **extra},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, int(extra.get("RECOPS_WORKERS", "1")))
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers, nothing else
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def wait_ready(url: str, process: subprocess.Popen, log: Path, workers: int = 1) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if len(worker_pids(process.pid)) >= workers and all_ready(url, workers):
            return
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    pytest.fail(f"the server did not become ready in 180 s: {log.read_text()[-2000:]}")


def all_ready(url: str, workers: int) -> bool:
    """/readyz 200 on fresh connections, enough times that every worker likely answered."""
    try:
        for _ in range(4 * workers):
            with httpx.Client(timeout=3) as fresh:
                if fresh.get(f"{url}/readyz").status_code != 200:
                    return False
    except httpx.TransportError:
        return False
    return True


def worker_pids(server: int) -> list[int]:
    """The API worker processes the server started (their own process groups)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"worker" in command and parent in (server, *_children(server)):
            found.append(int(proc.name))
    return found


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def counter(url: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def server(released: dict[str, str], redis_url: str) -> Iterator[tuple[str, int]]:
    """Two workers sharing the live state in Redis."""
    with serving(released, "main", RECOPS_WORKERS="2", RECOPS_LIVE_STATE=redis_url) as served:
        yield served


def test_every_endpoint_on_the_real_server(server) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/livez").status_code == 200
        assert http.post("/recommend", json={"user_id": USERS[0]}).status_code == 401
        known = http.post("/recommend", json={"user_id": USERS[0], "k": 3}, headers=AUTH).json()
        assert len(known["items"]) == 3 and not known["fallback"] and known["items"][0]["reason"]
        unknown = http.post("/recommend", json={"user_id": "u_ffffffffffffffff"}, headers=AUTH)
        assert unknown.json()["fallback"]
        session = http.post("/recommend/session", json={"history": [], "k": 2}, headers=AUTH)
        assert len(session.json()["items"]) == 2
        new = {"item_id": "moon-1", "title": "Moon Base Alpha", "genres": ["Sci-Fi"]}
        assert http.post("/items", json=new, headers=AUTH).json()["recommendable"]
        card = http.get("/model", headers=AUTH).json()
        assert card["name"] == "fusion_transformer" and card["blessing"]["blessed"]
        assert card["version"].startswith("recops_recommender:")
        metrics = http.get("/metrics").text
        assert "recops_cache_hit_rate" in metrics and "bentoml_service_request_total" in metrics
    for _ in range(8):  # fresh connections: both workers, one state
        with httpx.Client(base_url=url, timeout=30) as fresh:
            found = fresh.post("/similar", json={"text": "moon base", "k": 1}, headers=AUTH)
            assert found.json()["items"][0]["item_id"] == "moon-1"
            history = {"history": [{"item_id": "8", "timestamp": 1}], "k": 12}
            after = fresh.post("/recommend/session", json=history, headers=AUTH).json()
            assert "moon-1" in {item["item_id"] for item in after["items"]}


def test_an_event_reaches_every_worker(server) -> None:
    url, _ = server
    user = USERS[3]
    with httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/recommend", json={"user_id": user, "k": 2}, headers=AUTH).json()
        watched = first["items"][0]["item_id"]
        event = {"user_id": user, "item_id": watched, "timestamp": 2_000_000}
        assert http.post("/events", json=event, headers=AUTH).json()["recorded"]
        assert not http.post("/events", json=event, headers=AUTH).json()["recorded"]
    for _ in range(8):
        with httpx.Client(base_url=url, timeout=30) as fresh:
            body = {"user_id": user, "k": 11}
            answer = fresh.post("/recommend", json=body, headers=AUTH).json()
            assert watched not in {item["item_id"] for item in answer["items"]}


def test_random_paths_create_no_metric_series(server) -> None:
    # issue 17.1: 3,000 random paths without a token once took /metrics from 843 to
    # 60,843 lines; now every unknown path is counted under one "/other" label
    url, _ = server
    rng = random.Random(7)
    with httpx.Client(base_url=url, timeout=5) as http:
        http.get("/no-such-path-warmup")
        before = len(http.get("/metrics").text.splitlines())
        for _ in range(300):
            path = "/" + "".join(rng.choices(string.ascii_letters + string.digits, k=120))
            assert http.get(path).status_code in (401, 404)
        after = http.get("/metrics").text
    assert len(after.splitlines()) - before <= 10, len(after.splitlines()) - before
    assert 'endpoint="/other"' in after


def test_a_killed_worker_never_hangs_a_request(server) -> None:
    # issue 17.7: a worker killed under load left requests hanging ~10 s; with two
    # workers the other answers, and a loading worker answers 503 + Retry-After at once
    url, pid = server
    victims = worker_pids(pid)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    slowest, statuses = 0.0, []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with httpx.Client(base_url=url, timeout=5) as fresh:
                response = fresh.post("/recommend", json={"user_id": USERS[1]}, headers=AUTH)
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["retry-after"]
        except httpx.TransportError:
            statuses.append(0)
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.2)
    assert slowest < 5 and 0 not in statuses, (slowest, statuses)
    assert set(statuses) <= {200, 503} and statuses.count(200) > len(statuses) // 2
    deadline = time.monotonic() + 120  # the arbiter restarts it: two workers again
    while not (len(worker_pids(pid)) == 2 and all_ready(url, 2)):
        assert time.monotonic() < deadline, "the killed worker was not replaced in 120 s"
        time.sleep(0.5)


def test_a_second_server_from_the_same_checkout_keeps_its_own_counters(
    server, released: dict[str, str], tmp_path: Path
) -> None:
    # issue 17.8: both servers used $BENTOML_HOME/prometheus_multiproc_dir; the second one
    # wiped the first's counters and then reported the other's requests
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        http.post("/recommend/session", json={"history": [], "k": 1}, headers=AUTH)
    labels = {"endpoint": "recommend_session", "status": "200"}
    mine = counter(url, "recops_requests_total", **labels)
    assert mine >= 1
    live = str(tmp_path / "live.sqlite")
    with serving(released, "second", RECOPS_LIVE_STATE=live, RECOPS_WORKERS="1") as (other, _):
        with httpx.Client(base_url=other, timeout=30) as http:
            for _ in range(3):
                http.post("/recommend/session", json={"history": [], "k": 1}, headers=AUTH)
        theirs = counter(other, "recops_requests_total", endpoint="recommend_session", status="200")
        assert theirs == 3
        assert counter(
            url, "recops_requests_total", endpoint="recommend_session", status="200"
        ) == (mine)


def test_schemathesis_finds_no_contract_failure(server, tmp_path: Path) -> None:
    url, _ = server
    done = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "--config-file",
            str(SCHEMATHESIS_CONFIG),
            "run",
            f"{url}/docs.json",
            "--url",
            url,
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "-H",
            f"Authorization: Bearer {TOKEN}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout[-6000:]


@pytest.mark.browser
def test_swagger_page_opens_in_headless_chromium(server) -> None:
    url, _ = server
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), (
        "this test needs Debian's chromium: `make test` installs it as root "
        "(apt-get install chromium chromium-driver)"
    )
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.goto(url, timeout=60_000)
            page.wait_for_selector(".opblock", timeout=60_000)
            text = page.inner_text("body")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    for path in ("/recommend", "/recommend/session", "/similar", "/items", "/events", "/model"):
        assert path in text, path
    assert json.dumps(SCREENSHOT.stat().st_size)
