"""The real thing: package a tiny model into a Bento, `bentoml serve` it on a free loopback
port, exercise every endpoint, fuzz it with schemathesis (bounded), open Swagger in
headless Chromium; the server is always stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from pipelines.core.paths import PROJECT
from tests.inference.tiny import USERS
from tests.services.conftest import TOKEN

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIN = Path(sys.executable).parent
SCREENSHOT = PROJECT.artifacts / "screenshots" / "swagger.png"

PACKAGE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipelines.core.config import Params
    from pipelines.stages import package
    artifacts, home, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    package.run(
        Params(), selection=artifacts / "selection/selection.json",
        metrics=artifacts / "eval/metrics.json", coldstart=artifacts / "coldstart/metrics.json",
        models=artifacts / "models", features=artifacts / "features", split=artifacts / "split",
        embeddings=artifacts / "embeddings/items.npy", data_dvc=artifacts.parent / "data.dvc",
        out=out, bentoml_home=home,
    )
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("served")
    home = work / ".bentoml"  # a hidden folder, like the project's store: BentoML must cope
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "RECOPS_API_TOKEN": TOKEN,
        "PYTHONPATH": str(PROJECT.root),
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
    port = free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            str(BIN / "bentoml"),
            "serve",
            "recops_recommender:latest",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (work / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the server did not become ready in 120 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers, nothing else
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def test_every_endpoint_on_the_real_server(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
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
        found = http.post("/similar", json={"text": "moon base", "k": 1}, headers=AUTH).json()
        assert found["items"][0]["item_id"] == "moon-1"
        history = {"history": [{"item_id": "8", "timestamp": 1}], "k": 12}
        after = http.post("/recommend/session", json=history, headers=AUTH).json()
        assert "moon-1" in {item["item_id"] for item in after["items"]}
        card = http.get("/model", headers=AUTH).json()
        assert card["name"] == "fusion_transformer" and card["blessing"]["blessed"]
        assert card["version"].startswith("recops_recommender:")
        metrics = http.get("/metrics").text
        assert "recops_cache_hit_rate" in metrics and f'version="{card["version"]}' in metrics
        assert "bentoml_service_request_total" in metrics


def test_schemathesis_finds_no_server_error(server: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{server}/docs.json",
            "--url",
            server,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "-H",
            f"Authorization: Bearer {TOKEN}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_swagger_page_opens_in_headless_chromium(server: str) -> None:
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
            page.goto(server, timeout=60_000)
            page.wait_for_selector(".opblock", timeout=60_000)
            text = page.inner_text("body")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    for path in ("/recommend", "/recommend/session", "/similar", "/items", "/model"):
        assert path in text, path
    assert json.dumps(SCREENSHOT.stat().st_size)
