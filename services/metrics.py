"""What ``/metrics`` exports, and a bound on how many series a client can create.

- **Bounded labels.** BentoML's traffic middleware labels every request with its raw
  path, before any guard runs, so random paths (no token needed) created one series
  each, for good: 3,000 of them took a scrape from 843 to 60,843 lines. ``bound_labels``
  swaps in a subclass that labels a request with its route (``/recommend``), or
  ``/other`` for any path the service does not serve; the request itself still sees its
  real path.
- **One multiprocess directory per server.** BentoML keeps every server's counters in
  ``$BENTOML_HOME/prometheus_multiproc_dir`` and wipes it at start, so a second server
  from the same checkout wiped the first's counters and then reported its requests.
  ``own_multiproc_dir`` gives each server (each ``bentoml serve``) a fresh directory.
- **Our own numbers**: requests and latency per endpoint and status, cache hits and
  misses, added items and recorded events. They are ``prometheus_client`` metrics,
  created in the worker (after BentoML has set ``PROMETHEUS_MULTIPROC_DIR``), so every
  worker's counts add up in one scrape. The per-worker gauges (model version, catalogue
  size, cache size) carry a ``worker`` label.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

OTHER = "/other"  # the one label of every path the service does not serve
BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def route_label(path: str, routes: frozenset[str], prefixes: tuple[str, ...]) -> str:
    """``path`` itself if it is a route; its prefix plus ``*`` for static files; else OTHER."""
    if path in routes:
        return path
    for prefix in prefixes:
        if path.startswith(prefix):
            return prefix + "*"
    return OTHER


def bound_labels(routes: Iterable[str], prefixes: tuple[str, ...] = ()) -> None:
    """Make BentoML label its request metrics by route (call before the app is built)."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "bounded_labels", False):
        return
    known = frozenset(routes) | {"/metrics"}
    real = "recops.real_path"

    class _RealPath:
        """Inside the metrics middleware: hand the app the path the client asked for."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if real in scope:
                scope = {**scope, "path": scope[real]}
                del scope[real]
            await self.app(scope, receive, send)

    class BoundedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        bounded_labels = True

        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(_RealPath(app), **options)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                label = route_label(scope["path"], known, prefixes)
                if label != scope["path"]:
                    scope = {**scope, "path": label, real: scope["path"]}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedTrafficMetrics


def own_multiproc_dir() -> str:
    """A fresh Prometheus multiprocess directory for this server (call at import, before
    ``bentoml serve`` starts its workers; a worker keeps the one its server chose)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return os.environ["PROMETHEUS_MULTIPROC_DIR"]
    from bentoml._internal.configuration.containers import BentoMLContainer

    path = tempfile.mkdtemp(prefix="recops-prometheus-")
    BentoMLContainer.prometheus_multiproc_dir.set(path)
    atexit.register(shutil.rmtree, path, True)
    return path


class Metrics:
    """The service's counters; one set per process, made on first use."""

    _made: Metrics | None = None

    def __init__(self) -> None:
        import prometheus_client as prom  # here: after the worker set its multiproc dir

        self.requests = prom.Counter(
            "recops_requests_total", "API requests by endpoint and status", ["endpoint", "status"]
        )
        self.latency = prom.Histogram(
            "recops_request_latency_seconds",
            "API latency inside the service, by endpoint",
            ["endpoint"],
            buckets=BUCKETS,
        )
        self.cache_hits = prom.Counter("recops_cache_hits_total", "result-cache hits")
        self.cache_misses = prom.Counter("recops_cache_misses_total", "result-cache misses")
        self.events = prom.Counter("recops_live_events_total", "events recorded (new ones)")
        self.items = prom.Counter("recops_items_added_total", "items added at serving time")
        self.batch = prom.Histogram(
            "recops_model_batch_size",
            "requests ranked per model call (adaptive batching)",
            buckets=(1, 2, 4, 8, 16, 32),
        )

    @classmethod
    def get(cls) -> Metrics:
        if cls._made is None:
            cls._made = cls()
        return cls._made


def timed(endpoint: str) -> Callable:
    """Count an API call and its latency under ``endpoint``, by the status it answers
    (a ``Response``'s status, 500 when it raised). One decorator for every endpoint."""

    def decorate(api: Callable) -> Callable:
        @wraps(api)
        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            status = 500
            try:
                response = await api(self, *args, **kwargs)
                status = getattr(response, "status_code", 200)
                return response
            finally:
                metrics = Metrics.get()
                metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
                metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)

        return call

    return decorate


def worker_gauges(
    content: str, model: dict[str, str] | None, catalogue: int | None, cache: Any
) -> str:
    """BentoML's exposition plus this worker's gauges (labelled with its pid)."""
    worker = str(os.getpid())
    lines = [content.rstrip("\n")]
    if model is not None:
        labels = ",".join(f'{key}="{value}"' for key, value in model.items())
        lines += [
            "# TYPE recops_model_info gauge",
            f'recops_model_info{{{labels},worker="{worker}"}} 1',
            "# TYPE recops_catalogue_items gauge",
            f'recops_catalogue_items{{worker="{worker}"}} {catalogue}',
        ]
    lines += [
        "# TYPE recops_cache_hit_rate gauge",
        f'recops_cache_hit_rate{{worker="{worker}"}} {cache.hit_rate:.6f}',
        "# TYPE recops_cache_bytes gauge",
        f'recops_cache_bytes{{worker="{worker}"}} {cache.bytes}',
        "# TYPE recops_cache_entries gauge",
        f'recops_cache_entries{{worker="{worker}"}} {len(cache)}',
    ]
    return "\n".join(lines) + "\n"
