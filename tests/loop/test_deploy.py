"""Deployment switches the served model only once the new server is ready."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from pipelines.loop.deploy import NotReady, current, deploy, is_ready

SERVER = Path(__file__).with_name("fake_server.py")
READY = f"{sys.executable} {SERVER} --port {{port}} --bento {{bento}}"
NEVER = READY + " --never-ready"


@pytest.fixture
def record(tmp_path):
    path = tmp_path / "current.json"
    yield path
    served = current(path)
    if served:
        os.killpg(served["pid"], signal.SIGTERM)


def test_a_ready_server_takes_over_and_the_old_one_stops(record):
    first = deploy("m:1", record, command=READY, ready_timeout=20)
    assert is_ready(first["port"])
    second = deploy("m:2", record, command=READY, ready_timeout=20)
    assert current(record)["bento"] == "m:2" and is_ready(second["port"])
    import time

    for _ in range(50):
        if not is_ready(first["port"], timeout=0.2):
            break
        time.sleep(0.1)
    assert not is_ready(first["port"], timeout=0.2)


def test_a_server_that_never_gets_ready_leaves_the_old_champion_serving(record):
    first = deploy("m:1", record, command=READY, ready_timeout=20)
    with pytest.raises(NotReady, match="m:1 keeps serving"):
        deploy("m:2", record, command=NEVER, ready_timeout=2)
    assert current(record)["bento"] == "m:1"
    assert is_ready(first["port"])
