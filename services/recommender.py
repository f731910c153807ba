"""The RecOps recommender service (design.md §8): one typed BentoML 1.4 service.

Every answer comes from ``pipelines.inference`` (the same masked full-catalogue scoring
as evaluation, the same MiniLM text encoder, the same explanations, the same live
state the loop writes); this file validates requests, maps ids, batches model calls
and shapes the JSON. Bodies are in ``services.schemas``, auth in ``services.auth`` and
``services.guard``, the exported numbers in ``services.metrics``.

How a request runs: the event loop reads the live state (the user's events since
training, a newer profile, items added since) and the result cache; a miss becomes a
job, and every job that arrived in the same loop iteration is ranked in one model
call on the loop itself (adaptive batching: one request alone is not delayed, eight
at once share one forward pass). MiniLM encodes on its own thread. Items added
anywhere (``POST /items`` on any worker, or the loop's ``sync_batch``) reach every
worker through the live state, in the same order.

Run it with ``make serve`` (the blessed champion Bento, a local bearer token), or
``RECOPS_BUNDLE_DIR=<bundle> bentoml serve services.recommender:RecommenderService``.

Environment:
  RECOPS_API_TOKEN / RECOPS_API_TOKEN_FILE  the bearer token (required; no token = 401)
  RECOPS_BUNDLE_DIR     serve this bundle folder instead of the store model
  RECOPS_LIVE_STATE     a SQLite file (default: the layout's artifacts/serving/live.sqlite)
                        or redis://host:port/db (several workers on several hosts)
  RECOPS_WORKERS        worker processes (default 2; they share the live state)
  RECOPS_QUANTIZATION   none | int8 | bf16 (default: the card's serve config)
  RECOPS_PSEUDONYM_KEY  the ingestion HMAC key (hex): raw user ids are mapped to the
                        same pseudonyms as in the data; without it clients send pseudonyms
  RECOPS_TORCH_THREADS  threads for torch and BLAS per worker (default 1)
  RECOPS_CACHE_BYTES    result-cache budget per worker (default 64 MiB)
  RECOPS_ACCESS_LOG     1: one access-log line per request (off by default: it costs CPU)
  RECOPS_TRACING        1: OpenTelemetry spans per request (off by default: none is sampled)
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
import torch
from fastapi import FastAPI, HTTPException
from starlette.responses import Response

from pipelines.core.paths import Layout
from pipelines.data.privacy import KEY_ENV, PSEUDONYM_PATTERN, pseudonymise_id
from pipelines.features.text import item_text
from pipelines.inference.bundle import Bundle, load_bundle
from pipelines.inference.cache import BytesLRU
from pipelines.inference.catalogue import grow_model, scores_from_text
from pipelines.inference.live import LiveItem, LiveState, now_seconds, open_state
from pipelines.inference.now import NowBlend
from pipelines.inference.quantize import MODES, quantize
from pipelines.inference.recommend import (
    Scored,
    clean_history,
    histories_of,
    popular,
    recommend,
    similar,
)
from pipelines.inference.release import MODEL_NAME, pinned_model_path
from services import openapi
from services.auth import current_token
from services.guard import Guard
from services.metrics import Metrics, bound_labels, own_multiproc_dir, timed, worker_gauges
from services.schemas import (
    DEFAULT_MAX_BODY_BYTES,
    KNOWN_FIELDS,
    REQUESTS,
    Added,
    Event,
    ModelCard,
    Profile,
    Recommendations,
    Recorded,
    Similar,
)

log = logging.getLogger("recops.service")

DEFAULT_QUANTIZATION = "none"  # bench/serve.py --quantize decides (issue 9: <1% loss only)
DEFAULT_CACHE_BYTES = 64 * 2**20  # ~300 answers at k = 100, ~6,000 at k = 10
MAX_BATCH = 32  # jobs per model call; more wait for the next one
NOW_QUANTUM = 60  # a cached answer ranked for "now" is reused within the same minute
API_ROUTES = (*REQUESTS, "/model")
PROBES = ("/livez", "/readyz", "/healthz", "/metrics", "/", "/docs.json", "/schema.json")
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)

# BentoML must label its request metrics by route, not by raw path (before the app is built)
bound_labels((*API_ROUTES, *PROBES), prefixes=("/static_content/", "/assets/"))
own_multiproc_dir()  # two servers from one checkout never share (and wipe) their counters

# set once this worker's service has loaded the model and MiniLM: the guard answers
# 503 + Retry-After before that instead of holding the request
READY = threading.Event()


@dataclass(frozen=True)
class Job:
    """One ranking: a history (item indices, Unix seconds), profile codes, the moment."""

    items: list[int]
    stamps: list[int]
    profile: list[int]
    now: int
    k: int
    exclude_seen: bool


class Batcher:
    """Adaptive batching on the event loop: every job that arrived in the same loop
    iteration is ranked in one model call, as soon as those handlers are waiting.

    The model runs on the loop thread itself: a model thread made the loop and the model
    fight for the GIL (py-spy: a quarter of a worker's time in GIL hand-overs), and with
    one core per worker there is no parallelism to win. While a batch runs, new requests
    queue in the socket and form the next batch; one request alone waits for nothing.
    """

    def __init__(self, run: Callable[[list[Job]], list[list[Scored]]], max_batch: int) -> None:
        self.run = run
        self.max_batch = max_batch
        self._pending: list[tuple[Job, asyncio.Future]] = []
        self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if self._pending:
            self._schedule()
        batch = [(job, future) for job, future in batch if not future.cancelled()]
        if not batch:
            return
        Metrics.get().batch.observe(len(batch))
        try:
            results = self.run([job for job, _ in batch])
        except Exception as err:  # every waiting request gets the error, none hangs
            for _, future in batch:
                future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    async def rank(self, job: Job) -> list[Scored]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        self._schedule()
        return await future


def _json(payload: dict[str, Any], status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _limit_threads(threads: int) -> None:
    """torch, OpenBLAS, MKL and OpenMP pools of this worker: one request at a time each
    (numpy is loaded before this module, so the environment variables alone are too late)."""
    torch.set_num_threads(threads)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover (a serving install has it)
        log.warning("threadpoolctl missing: BLAS threads are not limited")


extra = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def _requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@bentoml.service(
    name="recops_recommender",
    # python_packages, not requirements_file: BentoML resolves that path again when it serves
    # the Bento and refuses any path with a hidden folder in it, like our store in .bentoml/
    image=bentoml.images.Image(python_version="3.11", lock_python_packages=False).python_packages(
        *_requirements(REQUIREMENTS)
    ),
    traffic={"timeout": 30},
    # every worker reads the shared live state, so added items and events reach them all
    # two on two cores measured best (bench/serve.py: misses at c=8 0.25 -> 0.36 of no-op)
    workers=int(os.environ.get("RECOPS_WORKERS", "2")),
    labels={"project": "recops"},
    # an access-log line per request cost ~7% of a worker's CPU under load (py-spy);
    # RECOPS_ACCESS_LOG=1 turns it back on
    logging={"access": {"enabled": os.environ.get("RECOPS_ACCESS_LOG", "0") == "1"}},
    # BentoML samples no trace by default yet builds a span per request (~5% of a miss);
    # RECOPS_TRACING=1 keeps them for an operator who configures an exporter
    **({} if os.environ.get("RECOPS_TRACING") == "1" else {"tracing": {"excluded_urls": ".*"}}),
)
@bentoml.asgi_app(extra, path="/")
class RecommenderService:
    bento_model = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(
        self,
        bundle_dir: Path | None = None,
        encoder: Any = None,
        quantization: str | None = None,
        background: bool = True,
        state: LiveState | None = None,
    ) -> None:
        threads = int(os.environ.get("RECOPS_TORCH_THREADS", "1"))
        _limit_threads(threads)
        self._bundle: Bundle | None = None
        self._blend: NowBlend | None = None
        self._encoder = encoder
        self._base_items = 0  # the bundle's own catalogue size
        self._live_seq = 0  # the newest live item applied to this worker's catalogue
        self._positive = 0  # items with a popularity above 0 (the fallback's reach)
        self._failed: str | None = None
        self._quantization = quantization or os.environ.get("RECOPS_QUANTIZATION")
        self.cache = BytesLRU(int(os.environ.get("RECOPS_CACHE_BYTES", DEFAULT_CACHE_BYTES)))
        self.state = state if state is not None else open_state(_state_location())
        self._batcher = Batcher(self._rank_jobs, MAX_BATCH)
        self._text = ThreadPoolExecutor(
            1, thread_name_prefix="recops-text", initializer=_limit_threads, initargs=(threads,)
        )
        self._key = _pseudonym_key()
        self.ready = False
        Metrics.get()
        if current_token() is None:
            log.warning("no API token configured (RECOPS_API_TOKEN): every API call gets 401")
        if background:
            threading.Thread(target=self._load, args=(bundle_dir,), daemon=True).start()
        else:
            self._load(bundle_dir, raise_errors=True)

    # -- loading -------------------------------------------------------------------------
    def _bundle_path(self, bundle_dir: Path | None) -> Path:
        if bundle_dir is not None:
            return Path(bundle_dir)
        if os.environ.get("RECOPS_BUNDLE_DIR"):
            return Path(os.environ["RECOPS_BUNDLE_DIR"])
        pinned = pinned_model_path(getattr(recommender_service, "bento", None))
        return pinned if pinned is not None else Path(self.bento_model.path)

    def _load(self, bundle_dir: Path | None, raise_errors: bool = False) -> None:
        started = time.perf_counter()
        try:
            bundle = load_bundle(self._bundle_path(bundle_dir))
            serve = bundle.card.get("serve", {})
            mode = self._quantization or serve.get("quantization", DEFAULT_QUANTIZATION)
            if mode not in MODES:
                raise ValueError(f"RECOPS_QUANTIZATION must be one of {MODES}")
            bundle.model = quantize(bundle.model, mode)
            self._quantization = mode
            self.swap(bundle)
            self.encoder()  # /readyz waits for MiniLM too: no request pays its load
            self.ready = True
            READY.set()
            log.info("loaded %s in %.1fs", bundle.version, time.perf_counter() - started)
        except Exception as err:  # readyz stays 503; the reason goes to the log only
            self._failed = f"{type(err).__name__}: {err}"
            log.error("could not load the model bundle: %s", self._failed)
            if raise_errors:
                raise

    def swap(self, bundle: Bundle) -> None:
        """Serve ``bundle`` from now on (a new champion): the result cache starts empty and
        the items added since training are applied again, from the live state."""
        self._bundle = bundle
        # what is popular now, blended in by the gap since the user's last event (the card's)
        self._blend = NowBlend.from_card(bundle.card)
        self._base_items = len(bundle.catalogue)
        self._positive = int((bundle.catalogue.popularity > 0).sum())
        self._live_seq = 0
        self._apply_items(self.state.items_after(0))
        self.cache.set_version(bundle.version)

    @property
    def version(self) -> str:
        bundle = self._bundle
        if bundle is None:
            return "loading"
        added = len(bundle.catalogue) - self._base_items
        return bundle.version if not added else f"{bundle.version}+{added}items"

    def encoder(self) -> Any:
        if self._encoder is None:
            from pipelines.features.text import TextEncoder

            self._encoder = TextEncoder(device="cpu")
        return self._encoder

    # -- probes and metrics ----------------------------------------------------------------
    def __is_ready__(self) -> bool:
        return self.ready

    def __metrics__(self, content: str) -> str:
        bundle = self._bundle
        model = None
        if bundle is not None:
            model = {
                "name": str(bundle.card.get("name", "")),
                "version": self.version,
                "quantization": str(self._quantization),
            }
        size = None if bundle is None else len(bundle.catalogue)
        return worker_gauges(content, model, size, self.cache)

    # -- the live state --------------------------------------------------------------------
    def _apply_items(self, items: Sequence[LiveItem]) -> None:
        """Append live items to this worker's catalogue (and model), in the state's order.
        Runs on the event loop (or before serving starts): nothing ranks meanwhile."""
        bundle = self._bundle
        if bundle is None or not items:
            return
        new = [item for item in items if item.item_id not in bundle.catalogue.index]
        if new and scores_from_text(bundle.model):
            grow_model(bundle.model, np.stack([item.vector for item in new]))
        for item in new:
            bundle.catalogue.add(item.item_id, item.title, item.text, item.vector)
        self._live_seq = max(self._live_seq, items[-1].seq)

    async def _sync_items(self) -> None:
        """Catch up with items added by another worker or the loop (one cheap read)."""
        if self.state.item_count() > self._live_seq:
            self._apply_items(self.state.items_after(self._live_seq))

    def pseudonym(self, user_id: str) -> str:
        """The id as stored: pseudonyms pass through; raw ids are hashed with the ingestion
        key when the server has it (never logged either way)."""
        if _PSEUDONYM.fullmatch(user_id) or self._key is None:
            return user_id
        return pseudonymise_id(user_id, self._key)

    # -- ranking (on the event loop, a batch at a time) ------------------------------------
    def _rank_jobs(self, jobs: list[Job]) -> list[list[Scored]]:
        """Every waiting job in one model call per exclude_seen value."""
        bundle = self._bundle
        assert bundle is not None
        model = bundle.model
        results: list[list[Scored]] = [[] for _ in jobs]
        for exclude_seen in (True, False):
            rows = [i for i, job in enumerate(jobs) if job.exclude_seen == exclude_seen]
            if not rows:
                continue
            histories = histories_of(
                [jobs[i].items for i in rows],
                [jobs[i].stamps for i in rows],
                [jobs[i].profile for i in rows],
                model.n_items,
                now=[jobs[i].now for i in rows],
            )
            k = max(jobs[i].k for i in rows)
            recent = None if self._blend is None else self._recent([jobs[i].now for i in rows])
            # the one call of `recommend` in the service
            ranked = recommend(
                model,
                histories,
                k,
                bundle.catalogue.vectors,
                exclude_seen,
                recent=recent,
                blend=self._blend,
            )
            for i, scored in zip(rows, ranked, strict=True):
                results[i] = scored[: jobs[i].k]
        return results

    def _recent(self, moments: list[int]) -> np.ndarray:
        """[B, n_model_items] events per item in the blend's window before each moment, from
        the live state (every appended batch and every POST /events): one read per minute."""
        bundle, blend = self._bundle, self._blend
        assert bundle is not None and blend is not None
        index, n_items = bundle.catalogue.index, bundle.model.n_items
        days = max(1, round(blend.window_days))
        rows: dict[int, np.ndarray] = {}
        out = np.zeros((len(moments), n_items), dtype=np.float32)
        for position, moment in enumerate(moments):
            minute = int(moment) // 60
            if minute not in rows:
                row = np.zeros(n_items, dtype=np.float32)
                for item, count in self.state.recent_counts(minute * 60, days).items():
                    column = index.get(item)
                    if column is not None and column < n_items:
                        row[column] = count
                rows[minute] = row
            out[position] = rows[minute]
        return out

    def _items(self, scored: list[Scored]) -> list[dict[str, Any]]:
        catalogue = self._bundle.catalogue  # type: ignore[union-attr]
        ids, titles = catalogue.item_ids, catalogue.titles
        return [
            {
                "item_id": ids[s.item],
                "title": titles[s.item],
                "score": s.score,
                "reason": [
                    {"item_id": ids[i], "title": titles[i], "weight": w} for i, w in s.reasons
                ],
            }
            for s in scored
        ]

    def _loading(self) -> Response | None:
        return None if self._bundle is not None else _error(503, "the model is still loading")

    # -- the API -------------------------------------------------------------------------
    @bentoml.api(route="/recommend", input_spec=REQUESTS["/recommend"])
    @timed("recommend")
    async def recommend(
        self, user_id: str, k: int = 10, exclude_seen: bool = True, at: int | None = None
    ) -> Recommendations:
        """A user's recommendations from their history (stored at training, plus every live
        event since) and profile; a user with neither gets the most popular items with
        ``fallback: true``."""
        if (loading := self._loading()) is not None:
            return loading
        await self._sync_items()
        bundle = self._bundle
        user = self.pseudonym(user_id)
        now = now_seconds() if at is None else at
        live = self.state.events(user)
        newer = self.state.profile(user)
        row = bundle.users.index.get(user)
        catalogue = bundle.catalogue
        if row is None and not live and newer is None:
            grown = len(catalogue) if k > self._positive else 0
            key = ("fallback", k, grown)
            cached = self.cache.get(key)
            if cached is None:
                scored = popular(catalogue.popularity, k)
                payload = {"items": self._items(scored), "model_version": self.version}
                cached = orjson.dumps({**payload, "fallback": True, "ignored_events": 0})
                self.cache.put(key, cached)
            return self._answer(cached)
        moment = at if at is not None else now // NOW_QUANTUM
        grown = len(catalogue) if scores_from_text(bundle.model) else 0
        last = live[-1] if live else None
        key = (user, k, exclude_seen, moment, len(live), last, _frozen(newer), grown)
        cached = self.cache.get(key)
        if cached is not None:
            return self._answer(cached)
        events = []
        if row is not None:
            events = list(zip(bundle.users.items[row], bundle.users.timestamps[row], strict=True))
        index = catalogue.index
        events += [(index[item], stamp) for item, stamp in live if item in index]
        items, stamps = clean_history(events)
        if newer is not None:
            profile = bundle.profile_code(newer)
        else:
            profile = bundle.users.profiles[row].tolist() if row is not None else [0, 0, 0, 0]
        job = Job(items, stamps, profile, now, k, exclude_seen)
        scored = await self._batcher.rank(job)
        body = orjson.dumps(
            {
                "items": self._items(scored),
                "model_version": self.version,
                "fallback": False,
                "ignored_events": 0,
            }
        )
        self.cache.put(key, body)
        return self._answer(body, hit=False)

    def _answer(self, body: bytes, hit: bool = True) -> Response:
        metrics = Metrics.get()
        (metrics.cache_hits if hit else metrics.cache_misses).inc()
        return Response(body, 200, media_type="application/json")

    @bentoml.api(route="/recommend/session", input_spec=REQUESTS["/recommend/session"])
    @timed("recommend_session")
    async def recommend_session(
        self,
        history: list[Event],
        profile: Profile | None = None,
        k: int = 10,
        at: int | None = None,
    ) -> Recommendations:
        """Anonymous and brand-new users: the same model from the session's events and the
        profile (zero events works: the profile alone, or nothing at all)."""
        if (loading := self._loading()) is not None:
            return loading
        await self._sync_items()
        bundle = self._bundle
        index = bundle.catalogue.index
        known = [(index[e.item_id], e.timestamp) for e in history if e.item_id in index]
        items, stamps = clean_history(known)
        codes = bundle.profile_code(profile.model_dump() if profile else {})
        now = now_seconds() if at is None else at
        scored = await self._batcher.rank(Job(items, stamps, codes, now, k, True))
        return _json(
            {
                "items": self._items(scored),
                "model_version": self.version,
                "fallback": False,
                "ignored_events": len(history) - len(known),
            }
        )

    @bentoml.api(route="/similar", input_spec=REQUESTS["/similar"])
    @timed("similar")
    async def similar(
        self, item_id: str | None = None, text: str | None = None, k: int = 10
    ) -> Similar:
        """Items closest to a catalogue item, or to free text encoded by the same MiniLM
        (so an item that did not exist at training time can be found)."""
        if (loading := self._loading()) is not None:
            return loading
        await self._sync_items()
        catalogue = self._bundle.catalogue
        if text is not None:
            loop = asyncio.get_running_loop()
            query = (await loop.run_in_executor(self._text, self.encoder().encode, [text]))[0]
            exclude: list[int] = []
        elif item_id not in catalogue.index:
            return _error(404, "unknown item_id")
        else:
            exclude = [catalogue.index[item_id]]
            query = catalogue.vectors[exclude[0]]
        scored = similar(catalogue.vectors, query, k, exclude)  # ~0.1 ms: ranked right here
        return _json({"items": self._items(scored), "model_version": self.version})

    @bentoml.api(route="/items", input_spec=REQUESTS["/items"])
    @timed("items")
    async def items(
        self, item_id: str, title: str, year: int | None = None, genres: list[str] | None = None
    ) -> Added:
        """Add an item by its text: every worker finds it by /similar at once and, with a
        model that scores items from text (the flagship), recommends it without retraining."""
        if (loading := self._loading()) is not None:
            return loading
        await self._sync_items()
        bundle = self._bundle
        if item_id in bundle.catalogue.index or self.state.has_item(item_id):
            return _error(409, "item_id already exists")  # before the encoder runs
        text = item_text(title, year, genres or [])
        loop = asyncio.get_running_loop()
        vector = (await loop.run_in_executor(self._text, self.encoder().encode, [text]))[0]
        if not self.state.add_items([(item_id, title, text, vector)]):
            return _error(409, "item_id already exists")  # another worker was first
        Metrics.get().items.inc()
        await self._sync_items()
        return _json(
            {
                "item_id": item_id,
                "recommendable": scores_from_text(bundle.model),
                "catalogue_size": len(bundle.catalogue),
                "model_version": self.version,
            }
        )

    @bentoml.api(route="/events", input_spec=REQUESTS["/events"])
    @timed("events")
    async def events(self, user_id: str, item_id: str, timestamp: int) -> Recorded:
        """Record that a user interacted with an item: their next /recommend uses it (and,
        with exclude_seen, never returns that item). Repeating an event changes nothing."""
        if (loading := self._loading()) is not None:
            return loading
        await self._sync_items()
        if item_id not in self._bundle.catalogue.index:
            return _error(404, "unknown item_id")
        user = self.pseudonym(user_id)
        if not _PSEUDONYM.fullmatch(user):
            # without the ingestion key a raw id cannot be mapped to a user, nor stored
            return _error(404, "unknown user_id: this server needs pseudonyms (u_ + 16 hex)")
        added = self.state.add_events([(user, item_id, timestamp)])
        Metrics.get().events.inc(added)
        return _json({"recorded": bool(added), "events": len(self.state.events(user))})

    @extra.get("/model", response_model=ModelCard, summary="The model card")
    def model_card(self) -> ModelCard:
        """Name, version, metrics, data hash, commit and blessing reasons of the served model."""
        if self._bundle is None:
            raise HTTPException(status_code=503, detail="the model is still loading")
        card = self._bundle.card
        return ModelCard(
            name=str(card.get("name", "")),
            version=self.version,
            metrics=card.get("metrics", {}),
            data_hash=card.get("data_hash"),
            commit=card.get("commit"),
            blessing=card.get("blessing", {}),
            quantization=str(self._quantization),
            catalogue_size=len(self._bundle.catalogue),
        )


def _frozen(values: dict[str, str] | None) -> tuple | None:
    return None if values is None else tuple(sorted(values.items()))


def _state_location() -> str:
    return os.environ.get("RECOPS_LIVE_STATE") or str(Layout.from_env().live_state)


def _pseudonym_key() -> bytes | None:
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        log.error("%s is not hex: raw user ids will not be mapped", KEY_ENV)
        return None


recommender_service = RecommenderService
recommender_service.add_asgi_middleware(
    Guard,
    token=current_token,
    max_body_bytes=int(os.environ.get("RECOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
    known_fields=KNOWN_FIELDS,
    schemas=REQUESTS,
    ready=READY.is_set,
    openapi=openapi.contract,
)
