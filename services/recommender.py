"""The RecOps recommender service (design.md §8): one typed BentoML 1.4 service.

Every answer comes from ``pipelines.inference`` (the same masked full-catalogue
scoring as evaluation, the same MiniLM text encoder, the same explanations);
this file only validates requests, maps ids and shapes the JSON.

Run it with ``make serve`` (the blessed champion Bento, a local bearer token),
or ``RECOPS_BUNDLE_DIR=<bundle> bentoml serve services.recommender:RecommenderService``.

Environment:
  RECOPS_API_TOKEN / RECOPS_API_TOKEN_FILE  the bearer token (required; no token = 401)
  RECOPS_BUNDLE_DIR     serve this bundle folder instead of the store model
  RECOPS_QUANTIZATION   none | int8 | bf16 (default: the card's serve config)
  RECOPS_PSEUDONYM_KEY  the ingestion HMAC key (hex): raw user ids are mapped to the
                        same pseudonyms as in the data; without it clients send pseudonyms
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import torch
from bentoml.exceptions import BentoMLException, NotFound, ServiceUnavailable
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.data.privacy import KEY_ENV, PSEUDONYM_PATTERN, pseudonymise_id
from pipelines.features.text import item_text
from pipelines.inference.bundle import Bundle, load_bundle
from pipelines.inference.cache import VersionedLRU
from pipelines.inference.catalogue import extend_model, scores_from_text
from pipelines.inference.quantize import MODES, quantize
from pipelines.inference.recommend import Scored, clean_history, histories_of, popular
from pipelines.inference.recommend import recommend as rank
from pipelines.inference.recommend import similar as nearest
from pipelines.inference.release import MODEL_NAME, pinned_model_path
from services.guard import Guard

log = logging.getLogger("recops.service")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # item and user ids: 1-64 safe characters
LABEL_PATTERN = r"^[A-Za-z0-9<>+ _.&'/-]{1,32}$"  # profile values, e.g. "25-34", "writer"
MAX_K = 100
MAX_HISTORY = 500
MAX_TEXT = 1_000
# 500 events of ~60 bytes fit in 32 KiB; 64 KiB leaves room and stops floods early
DEFAULT_MAX_BODY_BYTES = 65_536
DEFAULT_CACHE_ENTRIES = 10_000
DEFAULT_QUANTIZATION = "none"  # bench/serve.py --quantize decides (issue 9: <1% loss only)


# -- request and response bodies ---------------------------------------------------------


class _Request(BaseModel):
    # strict: "10" is not 10; forbid: an unknown field is an error, not silently ignored
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)


K = Annotated[int, Field(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")]


class RecommendRequest(_Request):
    user_id: str = Field(
        pattern=ID_PATTERN,
        description="the user's pseudonym (u_ + 16 hex), or their raw id when the server "
        "holds the ingestion key",
    )
    k: K = 10
    exclude_seen: bool = Field(True, description="never recommend items already in the history")


class Event(_Request):
    item_id: str = Field(pattern=ID_PATTERN, description="a catalogue item id")
    timestamp: int = Field(ge=0, le=2**40, description="Unix seconds")


class Profile(_Request):
    age_band: str | None = Field(None, pattern=LABEL_PATTERN, description='e.g. "25-34"')
    gender: str | None = Field(None, pattern=LABEL_PATTERN)
    occupation: str | None = Field(None, pattern=LABEL_PATTERN)
    region: str | None = Field(None, pattern=LABEL_PATTERN, description="3-character zip prefix")


class SessionRequest(_Request):
    history: list[Event] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description=f"the session's events, any order, at most {MAX_HISTORY}; "
        "a repeated item counts once",
    )
    profile: Profile | None = None
    k: K = 10


class SimilarRequest(_Request):
    item_id: str | None = Field(None, pattern=ID_PATTERN, description="a catalogue item")
    text: str | None = Field(
        None, min_length=1, max_length=MAX_TEXT, description="free text, encoded by MiniLM"
    )
    k: K = 10

    @model_validator(mode="after")
    def _one_query(self) -> SimilarRequest:
        if (self.item_id is None) == (self.text is None):
            raise ValueError("give exactly one of item_id or text")
        return self


class NewItem(_Request):
    item_id: str = Field(pattern=ID_PATTERN, description="a new, unused item id")
    title: str = Field(min_length=1, max_length=300)
    year: int | None = Field(None, ge=1800, le=2200)
    genres: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=20
    )


class Reason(BaseModel):
    item_id: str
    title: str
    weight: float = Field(description="how much this history item drove the recommendation")


class Item(BaseModel):
    item_id: str
    title: str
    score: float
    reason: list[Reason] = Field(default_factory=list, description="history items behind it")


class Recommendations(BaseModel):
    items: list[Item]
    model_version: str
    fallback: bool = Field(False, description="true when popularity stood in for the model")
    ignored_events: int = Field(0, description="history events on unknown items, skipped")


class Similar(BaseModel):
    items: list[Item]
    model_version: str


class Added(BaseModel):
    item_id: str
    recommendable: bool = Field(description="the model scores it from its text, no retraining")
    catalogue_size: int
    model_version: str


class ModelCard(BaseModel):
    name: str
    version: str
    metrics: dict[str, Any]
    data_hash: str | None
    commit: str | None
    blessing: dict[str, Any]
    quantization: str
    catalogue_size: int


KNOWN_FIELDS = frozenset(
    name
    for model in (RecommendRequest, Event, Profile, SessionRequest, SimilarRequest, NewItem)
    for name in model.model_fields
)


class Conflict(BentoMLException):
    error_code = HTTPStatus.CONFLICT


# -- small Prometheus text exposition of our own numbers ---------------------------------


class Stats:
    """Request counts and latencies per endpoint; rendered next to BentoML's own metrics."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self.count: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(self.BUCKETS))
        self.sum: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.count[(endpoint, status)] += 1
        self.sum[endpoint] += seconds
        self.n[endpoint] += 1
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                self.buckets[endpoint][i] += 1


def _name(bundle: Bundle, index: int) -> str:
    return bundle.catalogue.titles[index]


# -- the service -------------------------------------------------------------------------

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
    workers=1,  # POST /items changes the in-memory catalogue: one worker keeps one truth
    labels={"project": "recops"},
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
    ) -> None:
        # one request at a time per worker: torch's own thread pool only fights the event
        # loop and the other requests for 2 cores (bench/serve.py measured it)
        torch.set_num_threads(int(os.environ.get("RECOPS_TORCH_THREADS", "1")))
        self._lock = threading.RLock()
        self._bundle: Bundle | None = None
        self._encoder = encoder
        self._added = 0
        self._failed: str | None = None
        self._quantization = quantization or os.environ.get("RECOPS_QUANTIZATION")
        self.stats = Stats()
        self.cache = VersionedLRU(DEFAULT_CACHE_ENTRIES)
        self._key = _pseudonym_key()
        if self.token() is None:
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
            self.cache = VersionedLRU(int(serve.get("cache_entries", DEFAULT_CACHE_ENTRIES)))
            self.swap(bundle)
            log.info("loaded %s in %.1fs", bundle.version, time.perf_counter() - started)
        except Exception as err:  # readyz stays 503; the reason goes to the log only
            self._failed = f"{type(err).__name__}: {err}"
            log.error("could not load the model bundle: %s", self._failed)
            if raise_errors:
                raise

    def swap(self, bundle: Bundle) -> None:
        """Serve ``bundle`` from now on (a new champion): the result cache starts empty."""
        with self._lock:
            self._bundle = bundle
            self._added = 0
            self.cache.set_version(bundle.version)

    @property
    def version(self) -> str:
        bundle = self._ready()
        return bundle.version if not self._added else f"{bundle.version}+{self._added}items"

    def token(self) -> str | None:
        return _current_token()

    def encoder(self) -> Any:
        with self._lock:
            if self._encoder is None:
                from pipelines.features.text import TextEncoder

                self._encoder = TextEncoder(device="cpu")
            return self._encoder

    def _ready(self) -> Bundle:
        if self._bundle is None:
            raise ServiceUnavailable("the model is still loading")
        return self._bundle

    # -- probes and metrics ----------------------------------------------------------------
    def __is_ready__(self) -> bool:
        return self._bundle is not None

    def __metrics__(self, content: str) -> str:
        lines = [content.rstrip("\n")]
        bundle = self._bundle
        if bundle is not None:
            lines += [
                "# TYPE recops_model_info gauge",
                f'recops_model_info{{name="{bundle.card.get("name", "")}",'
                f'version="{self.version}",quantization="{self._quantization}"}} 1',
                "# TYPE recops_catalogue_items gauge",
                f"recops_catalogue_items {len(bundle.catalogue)}",
            ]
        lines += [
            "# TYPE recops_cache_hits_total counter",
            f"recops_cache_hits_total {self.cache.hits}",
            "# TYPE recops_cache_misses_total counter",
            f"recops_cache_misses_total {self.cache.misses}",
            "# TYPE recops_cache_hit_rate gauge",
            f"recops_cache_hit_rate {self.cache.hit_rate:.6f}",
            "# TYPE recops_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.stats.count.items()):
            lines.append(
                f'recops_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}'
            )
        lines.append("# TYPE recops_request_latency_seconds histogram")
        for endpoint, counts in sorted(self.stats.buckets.items()):
            for bound, count in zip(Stats.BUCKETS, counts, strict=True):
                lines.append(
                    f'recops_request_latency_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} '
                    f"{count}"
                )
            total = self.stats.n[endpoint]
            lines += [
                f'recops_request_latency_seconds_bucket{{endpoint="{endpoint}",le="+Inf"}} {total}',
                f'recops_request_latency_seconds_sum{{endpoint="{endpoint}"}} '
                f"{self.stats.sum[endpoint]:.6f}",
                f'recops_request_latency_seconds_count{{endpoint="{endpoint}"}} {total}',
            ]
        return "\n".join(lines) + "\n"

    def _timed(self, endpoint: str, work: Any) -> Any:
        started = time.perf_counter()
        status = 200
        try:
            return work()
        except BentoMLException as err:
            status = int(err.error_code)
            raise
        except Exception:
            status = 500
            log.exception("%s failed", endpoint)  # the request body is never logged
            raise
        finally:
            self.stats.observe(endpoint, status, time.perf_counter() - started)

    # -- helpers -------------------------------------------------------------------------
    def pseudonym(self, user_id: str) -> str:
        """The id as stored: pseudonyms pass through; raw ids are hashed with the ingestion
        key when the server has it (never logged either way)."""
        import re

        if re.fullmatch(PSEUDONYM_PATTERN, user_id) or self._key is None:
            return user_id
        return pseudonymise_id(user_id, self._key)

    def _items(self, bundle: Bundle, scored: list[Scored]) -> list[Item]:
        ids, titles = bundle.catalogue.item_ids, bundle.catalogue.titles
        return [
            Item(
                item_id=ids[s.item],
                title=titles[s.item],
                score=round(s.score, 6),
                reason=[
                    Reason(item_id=ids[i], title=titles[i], weight=round(w, 6))
                    for i, w in s.reasons
                ],
            )
            for s in scored
        ]

    def _rank(
        self,
        bundle: Bundle,
        items: list[int],
        stamps: list[int],
        profile: list[int],
        k: int,
        exclude_seen: bool,
    ) -> list[Scored]:
        model = bundle.model
        histories = histories_of([items], [stamps], [profile], model.n_items)
        return rank(model, histories, k, bundle.catalogue.vectors, exclude_seen)[0]

    # -- the API -------------------------------------------------------------------------
    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> Recommendations:
        """A known user's recommendations from their stored history and profile;
        an unknown user gets the most popular items with ``fallback: true``."""

        def work() -> Recommendations:
            with self._lock:
                bundle = self._ready()
                key = (self.pseudonym(user_id), k, exclude_seen)
                cached = self.cache.get(key)
                if cached is not None:
                    return cached
                user = bundle.users.index.get(key[0])
                if user is None:
                    scored = popular(bundle.catalogue.popularity, k)
                    result = Recommendations(
                        items=self._items(bundle, scored),
                        model_version=self.version,
                        fallback=True,
                    )
                else:
                    users = bundle.users
                    scored = self._rank(
                        bundle,
                        users.items[user],
                        users.timestamps[user],
                        users.profiles[user].tolist(),
                        k,
                        exclude_seen,
                    )
                    result = Recommendations(
                        items=self._items(bundle, scored), model_version=self.version
                    )
                self.cache.put(key, result)
                return result

        return self._timed("recommend", work)

    @bentoml.api(route="/recommend/session", input_spec=SessionRequest)
    def recommend_session(
        self, history: list[Event], profile: Profile | None = None, k: int = 10
    ) -> Recommendations:
        """Anonymous and brand-new users: the same model from the session's events and the
        profile (zero events works: the profile alone, or nothing at all)."""

        def work() -> Recommendations:
            with self._lock:
                bundle = self._ready()
                index = bundle.catalogue.index
                known = [(index[e.item_id], e.timestamp) for e in history if e.item_id in index]
                items, stamps = clean_history(known)
                codes = bundle.profile_code(profile.model_dump() if profile else {})
                scored = self._rank(bundle, items, stamps, codes, k, True)
                seen = set(items)
                scored = [s for s in scored if s.item not in seen]
                return Recommendations(
                    items=self._items(bundle, scored),
                    model_version=self.version,
                    ignored_events=len(history) - len(known),
                )

        return self._timed("recommend_session", work)

    @bentoml.api(route="/similar", input_spec=SimilarRequest)
    def similar(self, item_id: str | None = None, text: str | None = None, k: int = 10) -> Similar:
        """Items closest to a catalogue item, or to free text encoded by the same MiniLM
        (so an item that did not exist at training time can be found)."""

        def work() -> Similar:
            if text is not None:
                query = self.encoder().encode([text])[0]
            with self._lock:
                bundle = self._ready()
                exclude: list[int] = []
                if item_id is not None:
                    if item_id not in bundle.catalogue.index:
                        raise NotFound("unknown item_id")
                    exclude = [bundle.catalogue.index[item_id]]
                    query = bundle.catalogue.vectors[exclude[0]]
                scored = nearest(bundle.catalogue.vectors, query, k, exclude)
                return Similar(items=self._items(bundle, scored), model_version=self.version)

        return self._timed("similar", work)

    @bentoml.api(route="/items", input_spec=NewItem)
    def items(
        self, item_id: str, title: str, year: int | None = None, genres: list[str] | None = None
    ) -> Added:
        """Add an item by its text: it is found by /similar at once and, with a model that
        scores items from text (the flagship), recommended without retraining."""

        def work() -> Added:
            text = item_text(title, year, genres or [])
            vector = np.asarray(self.encoder().encode([text])[0], dtype=np.float32)
            with self._lock:
                bundle = self._ready()
                if item_id in bundle.catalogue.index:
                    raise Conflict("item_id already exists")
                recommendable = scores_from_text(bundle.model)
                if recommendable:
                    grown = extend_model(bundle.model, vector[None])
                    bundle.model = grown
                bundle.catalogue.add(item_id, title, text, vector)
                self._added += 1
                self.cache.set_version(self.version)  # answers without the new item are stale
                return Added(
                    item_id=item_id,
                    recommendable=recommendable,
                    catalogue_size=len(bundle.catalogue),
                    model_version=self.version,
                )

        return self._timed("items", work)

    @extra.get("/model", response_model=ModelCard, summary="The model card")
    def model_card(self) -> ModelCard:
        """Name, version, metrics, data hash, commit and blessing reasons of the served model."""
        if self._bundle is None:
            from fastapi import HTTPException

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
    token=lambda: _current_token(),
    max_body_bytes=int(os.environ.get("RECOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
    known_fields=KNOWN_FIELDS,
    schemas={
        "/recommend": RecommendRequest,
        "/recommend/session": SessionRequest,
        "/similar": SimilarRequest,
        "/items": NewItem,
    },
)


def _current_token() -> str | None:
    if os.environ.get("RECOPS_API_TOKEN"):
        return os.environ["RECOPS_API_TOKEN"].strip()
    path = os.environ.get("RECOPS_API_TOKEN_FILE")
    if path and Path(path).is_file():
        return Path(path).read_text().strip() or None
    return None
