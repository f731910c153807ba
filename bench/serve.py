"""Serving benchmark: throughput and latency of the real server on loopback (issue 9).

Starts `bentoml serve` on a free 127.0.0.1 port from a bundle (default: the
champion in .bentoml/), then, at concurrency 1, 8 and 32, sends a bounded number
of requests (and for at most --seconds each) to /recommend, /recommend/session,
/similar and /livez (the framework's no-op ceiling), and prints requests/s, p50,
p99 and errors. --soak S adds an S-second /recommend soak reporting server RSS
growth. --quantize also measures test NDCG@10 and scoring latency per
quantisation mode through the evaluator (artifacts/ needed). Not a test.

    python bench/serve.py [--requests 400] [--seconds 20] [--soak 300] [--quantize]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of the server's process group (the server and its workers)."""
    group = os.getpgid(pid)
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total


async def load(url: str, path: str, bodies, concurrency: int, requests: int, seconds: float):
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                body = bodies()
                started = time.perf_counter()
                try:
                    if body is None:
                        response = await client.get(path)
                    else:
                        response = await client.post(path, json=body, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return len(latencies) / elapsed, p(0.50), p(0.99), errors, len(latencies)


def known_users() -> list[str]:
    """Pseudonymised ids of users the champion knows (BENCH_USERS, else the split's users).

    Unknown ids would measure the popularity fallback, not the model.
    """
    if os.environ.get("BENCH_USERS"):
        return os.environ["BENCH_USERS"].split(",")
    import pandas as pd

    from pipelines.core.paths import PROJECT

    if not PROJECT.split_users.exists():
        raise SystemExit(f"{PROJECT.split_users} is missing: run `make run` or set BENCH_USERS")
    return [str(u) for u in pd.read_parquet(PROJECT.split_users)["user_id"]]


def cache_counts(url: str) -> tuple[int, int]:
    """The server's result-cache hits and misses so far (from /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("recops_cache_hits_total", "recops_cache_misses_total"):
            counts[name] = int(float(value))
    return counts.get("recops_cache_hits_total", 0), counts.get("recops_cache_misses_total", 0)


def serve(bundle: Path | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RECOPS_API_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    env.setdefault("BENTOML_HOME", str(ROOT / ".bentoml"))
    target = "recops_recommender:latest"
    if bundle is not None:
        env["RECOPS_BUNDLE_DIR"] = str(bundle)
        target = "services.recommender:RecommenderService"
    command = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of the champion")
    parser.add_argument("--requests", type=int, default=400, help="per endpoint and level")
    parser.add_argument("--seconds", type=float, default=20.0, help="per endpoint and level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--soak", type=float, default=0.0, help="soak seconds on /recommend")
    parser.add_argument("--quantize", action="store_true")
    args = parser.parse_args()

    process, url = serve(args.bundle)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        card = httpx.get(f"{url}/model", headers=headers).json()
        sample = httpx.post(
            f"{url}/recommend/session", json={"history": [], "k": 20}, headers=headers
        ).json()["items"]
        items = [entry["item_id"] for entry in sample]
        known = known_users()
        rng = random.Random(0)
        endpoints = {
            "/recommend": lambda: {"user_id": rng.choice(known), "k": 10},
            "/recommend/session": lambda: {
                "history": [
                    {"item_id": i, "timestamp": 1_000_000 + 60 * n}
                    for n, i in enumerate(rng.sample(items, 5))
                ],
                "k": 10,
            },
            "/similar": lambda: {"item_id": rng.choice(items), "k": 10},
            "/livez (no-op)": lambda: None,
        }
        print(
            f"model {card['name']} {card['version']}, catalogue {card['catalogue_size']} items, "
            f"quantization {card['quantization']}"
        )
        print(f"/recommend: {len(known)} known users at random (a cache miss runs the model)")
        print("| endpoint | concurrency | req/s | p50 ms | p99 ms | errors | requests", end="")
        print(" | cache hits |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for level in (int(x) for x in args.levels.split(",")):
            for name, bodies in endpoints.items():
                path = name.split(" ")[0]
                before = cache_counts(url)
                rps, p50, p99, errors, n = asyncio.run(
                    load(url, path, bodies, level, args.requests, args.seconds)
                )
                hits, misses = (a - b for a, b in zip(cache_counts(url), before, strict=True))
                share = f"{100 * hits / (hits + misses):.0f}%" if hits + misses else "-"
                print(
                    f"| {name} | {level} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {errors} | {n} "
                    f"| {share} |"
                )
        if args.soak:
            before = rss_kib(process.pid)
            rps, p50, p99, errors, n = asyncio.run(
                load(url, "/recommend", endpoints["/recommend"], 8, 10**9, args.soak)
            )
            after = rss_kib(process.pid)
            print(
                f"soak {args.soak:.0f}s /recommend c=8: {n} requests, {rps:.1f} req/s, "
                f"p99 {p99:.1f} ms, {errors} errors; RSS {before} -> {after} KiB "
                f"({100 * (after - before) / max(before, 1):+.1f}%)"
            )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    if args.quantize:
        quantization_table()


def quantization_table() -> None:
    """Test NDCG@10 through the evaluator and scoring latency, per quantisation mode."""
    import json

    import torch

    from pipelines.core.paths import PROJECT
    from pipelines.core.schema import USER_IDX
    from pipelines.evaluation.ranking import evaluate_model
    from pipelines.features.dataset import load_dataset
    from pipelines.features.sequences import histories_for, targets_for
    from pipelines.inference.quantize import MODES, quantize
    from pipelines.models import load_model

    winner = json.loads(PROJECT.selection.read_text())["winner"]
    model = load_model(PROJECT.models_dir / winner)
    dataset = load_dataset()
    profiles = dataset.side.profiles_of(dataset.sequences[USER_IDX].to_numpy())
    histories = histories_for(dataset.sequences, "test", profiles)
    targets = targets_for(dataset.sequences, "test")
    print(f"\n{winner}: test NDCG@10 and latency per quantisation mode")
    print("| mode | test NDCG@10 | change | ms per user (batch 1) | ms per 256 users |")
    print("|---|---:|---:|---:|---:|")
    base = None
    for mode in MODES:
        try:
            small = quantize(model, mode)
            with torch.inference_mode():
                ndcg = evaluate_model(small, histories, targets, 10, 256)["ndcg@10"]
                one = histories.rows(slice(0, 1))
                small.score_all(one)
                started = time.perf_counter()
                for i in range(50):
                    small.score_all(histories.rows(slice(i, i + 1)))
                single = (time.perf_counter() - started) / 50 * 1e3
                started = time.perf_counter()
                small.score_all(histories.rows(slice(0, 256)))
                batch = (time.perf_counter() - started) * 1e3
        except Exception as err:  # a mode this CPU or model cannot run
            print(f"| {mode} | failed: {type(err).__name__} | | | |")
            continue
        base = ndcg if base is None else base
        change = 100 * (ndcg - base) / base
        print(f"| {mode} | {ndcg:.4f} | {change:+.2f}% | {single:.2f} | {batch:.1f} |")


if __name__ == "__main__":
    main()
