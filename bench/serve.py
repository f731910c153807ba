"""Serving benchmark: throughput and latency of the real server on loopback (issue 17).

Starts `bentoml serve` on a free 127.0.0.1 port (the working tree's service with
--bundle, else the champion Bento) and measures, each run bounded in requests and
seconds:

- closed loop at concurrency 1, 8 and 32: /recommend on **cache misses only** (every
  request a new (user, k) pair, k in 1..100), /recommend/session, /similar, and /livez
  (the framework's no-op ceiling); requests/s, p50, p99, errors, cache-hit share;
- open loop at --rate req/s (default 50) on /recommend misses: requests are sent on a
  fixed schedule whatever the server does, and latency runs from the scheduled send
  time, so a stall shows in the tail instead of slowing the client down;
- the live state's cost: /recommend p50/p99 at concurrency 1 for users with no live
  events, then the same users after 50 POST /events each, and the state reads alone;
- --soak S: S seconds of /recommend misses at concurrency 8, with the resident memory
  of every process the server started (the arbiter, each worker, anything they
  spawned), before and after;
- --quantize: test NDCG@10 and scoring latency per quantisation mode (artifacts/ needed).

Not a test. Run it with `nice` on a shared machine; the client shares the CPUs.

    python bench/serve.py --bundle DIR [--workers 2] [--live sqlite|redis] [--soak 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process it started, at any depth (whatever their process group)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def rss_kib(pid: int) -> dict[int, tuple[str, int]]:
    """Resident memory of every process the server started: {pid: (command, KiB)}."""
    out = {}
    for child in descendants(pid):
        try:
            status = Path(f"/proc/{child}/status").read_text().splitlines()
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        out[child] = (command.strip()[:60], rss)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by every process the server started: on a
    shared machine, the server's own cost per request, whatever else runs."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for child in descendants(pid):
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies) or [0.0]
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return pick(0.50), pick(0.99)


async def closed_loop(url, path, bodies, concurrency, requests, seconds):
    """``concurrency`` clients, each sending its next request when the last one answered."""
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + seconds
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
                        response = await client.post(path, json=body, headers=HEADERS)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, *percentiles(latencies), errors, len(latencies)


async def open_loop(url, path, bodies, rate, seconds):
    """Requests sent at ``rate``/s on a fixed schedule; latency from the scheduled time."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                response = await client.post(path, json=bodies(), headers=HEADERS)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - scheduled)
            errors += not ok

        await asyncio.gather(*(one(i) for i in range(n)))
        achieved = n / (time.perf_counter() - start)
    return achieved, *percentiles(latencies), errors, n


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


def misses(users: list[str], seed: int) -> Callable[[], dict]:
    """Bodies that never repeat a (user, k) pair: every request is a cache miss."""
    rng = random.Random(seed)
    pairs = [(u, k) for u in users for k in range(1, 101)]
    rng.shuffle(pairs)
    stream: Iterator[tuple[str, int]] = iter(pairs)

    def body() -> dict:
        user, k = next(stream)
        return {"user_id": user, "k": k}

    return body


def cache_counts(url: str) -> tuple[int, int]:
    """The server's result-cache hits and misses so far (from /metrics, all workers)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("recops_cache_hits_total", "recops_cache_misses_total"):
            counts[name] = int(float(value))
    return counts.get("recops_cache_hits_total", 0), counts.get("recops_cache_misses_total", 0)


def serve(bundle: Path | None, workers: int, live: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "RECOPS_API_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
        "RECOPS_WORKERS": str(workers),
        "RECOPS_LIVE_STATE": live,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
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
    log = open(work / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            # fresh connections, so that every worker (not just the first) has answered
            if all(
                httpx.get(f"{url}/readyz", timeout=2).status_code == 200 for _ in range(8 * workers)
            ):
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"the server did not become ready; see {work / 'server.log'}")


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return process, f"redis://127.0.0.1:{port}/0"


def row(name: str, level: int | str, result, share: str, cpu: float) -> str:
    rps, p50, p99, errors, n = result
    return (
        f"| {name} | {level} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {errors} | {n} | {share} "
        f"| {1e3 * cpu / max(n, 1):.2f} |"
    )


def measured(url, path, bodies, level, args, pid) -> tuple[tuple, str, float]:
    before = cache_counts(url)
    cpu = cpu_seconds(pid)
    result = asyncio.run(closed_loop(url, path, bodies, level, args.requests, args.seconds))
    cpu = cpu_seconds(pid) - cpu
    hits, misses_ = (a - b for a, b in zip(cache_counts(url), before, strict=True))
    share = f"{100 * hits / (hits + misses_):.0f}%" if hits + misses_ else "-"
    return result, share, cpu


def live_cost(url: str, users: list[str], items: list[str], args) -> None:
    """/recommend at concurrency 1 before and after 50 live events per user."""
    sample = users[: args.live_users]
    print("\nlive state: /recommend at concurrency 1, the same users, misses")
    print("| live events per user | req/s | p50 ms | p99 ms | errors | requests |")
    print("|---:|---:|---:|---:|---:|---:|")
    for round_ in range(2):
        bodies = misses(sample, seed=10 + round_)
        result = asyncio.run(closed_loop(url, "/recommend", bodies, 1, args.requests, args.seconds))
        events = 0 if round_ == 0 else 50
        rps, p50, p99, errors, n = result
        print(f"| {events} | {rps:.1f} | {p50:.2f} | {p99:.2f} | {errors} | {n} |")
        if round_ == 0:
            with httpx.Client(base_url=url, timeout=30) as client:
                for user in sample:
                    for j, item in enumerate(items[:50]):
                        body = {"user_id": user, "item_id": item, "timestamp": 893_000_000 + j}
                        client.post("/events", json=body, headers=HEADERS).raise_for_status()


def state_reads(live: str, users: list[str]) -> None:
    """What the three reads of every /recommend cost alone (in this process)."""
    from pipelines.inference.live import open_state

    state = open_state(live)
    started = time.perf_counter()
    n = 2_000
    for i in range(n):
        user = users[i % len(users)]
        state.item_count()
        state.events(user)
        state.profile(user)
    each = (time.perf_counter() - started) / n * 1e6
    print(f"\nstate reads per /recommend (item_count, events, profile): {each:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="serve this bundle with the working tree")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--live", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--requests", type=int, default=600, help="per endpoint and level")
    parser.add_argument("--seconds", type=float, default=20.0, help="per endpoint and level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop requests/s")
    parser.add_argument("--open-seconds", type=float, default=20.0)
    parser.add_argument("--live-users", type=int, default=20)
    parser.add_argument("--soak", type=float, default=0.0, help="soak seconds on /recommend")
    parser.add_argument("--skip-closed", action="store_true")
    parser.add_argument("--quantize", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    redis = None
    live = str(work / "live.sqlite")
    if args.live == "redis":
        redis, live = start_redis(work)
    process, url = serve(args.bundle, args.workers, live, work)
    try:
        card = httpx.get(f"{url}/model", headers=HEADERS).json()
        sample = httpx.post(
            f"{url}/recommend/session", json={"history": [], "k": 100}, headers=HEADERS
        ).json()["items"]
        items = [entry["item_id"] for entry in sample]
        known = known_users()
        rng = random.Random(0)
        print(
            f"model {card['name']} {card['version']}, catalogue {card['catalogue_size']} items, "
            f"quantization {card['quantization']}; {args.workers} worker(s), live state "
            f"{args.live}; {os.cpu_count()} CPUs shared with the client"
        )
        endpoints = {
            "/recommend (misses)": misses(known, seed=1),
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
        if not args.skip_closed:
            print("| endpoint | concurrency | req/s | p50 ms | p99 ms | errors | requests", end="")
            print(" | cache hits | server CPU ms/request |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for level in (int(x) for x in args.levels.split(",")):
                for name, bodies in endpoints.items():
                    path = name.split(" ")[0]
                    result, share, cpu = measured(url, path, bodies, level, args, process.pid)
                    print(row(name, level, result, share, cpu), flush=True)
        open_result = asyncio.run(
            open_loop(url, "/recommend", misses(known, seed=2), args.rate, args.open_seconds)
        )
        rps, p50, p99, errors, n = open_result
        print(
            f"\nopen loop /recommend misses, offered {args.rate:.0f} req/s for "
            f"{args.open_seconds:.0f}s: achieved {rps:.1f} req/s, p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms (from the scheduled send time), {errors} errors of {n}"
        )
        live_cost(url, known, items, args)
        state_reads(live, known)
        if args.soak:
            before = rss_kib(process.pid)
            result = asyncio.run(
                closed_loop(url, "/recommend", misses(known, seed=3), 8, 10**9, args.soak)
            )
            after = rss_kib(process.pid)
            rps, p50, p99, errors, n = result
            print(
                f"\nsoak {args.soak:.0f}s /recommend misses c=8: {n} requests, {rps:.1f} req/s, "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {errors} errors"
            )
            print("| process | RSS before KiB | RSS after KiB | change |")
            print("|---|---:|---:|---:|")
            for pid in sorted(set(before) | set(after)):
                command, old = before.get(pid, ("(started during the soak)", 0))
                new = after.get(pid, (command, 0))[1]
                change = f"{100 * (new - old) / old:+.1f}%" if old else "new"
                print(f"| {pid} {command} | {old} | {new} | {change} |")
            total_before = sum(v for _, v in before.values())
            total_after = sum(v for _, v in after.values())
            print(
                f"| all {len(after)} processes | {total_before} | {total_after} | "
                f"{100 * (total_after - total_before) / max(total_before, 1):+.1f}% |"
            )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
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
