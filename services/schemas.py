"""Request and response bodies of the service (design.md §8): typed, bounded, strict.

Requests forbid unknown fields and coerce nothing ("10" is not 10); every id matches
the data contract's one ``ID_PATTERN``; every list and string has a bound. The
``Field`` descriptions are the API documentation (Swagger at ``/``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.data.privacy import ID_PATTERN

LABEL_PATTERN = r"^[A-Za-z0-9<>+ _.&'/-]{1,32}$"  # profile values, e.g. "25-34", "writer"
MAX_K = 100
MAX_HISTORY = 500
MAX_TEXT = 1_000
MAX_TIMESTAMP = 2**40  # Unix seconds; ~year 36,800: any real clock fits
# 500 events of ~60 bytes fit in 32 KiB; 64 KiB leaves room and stops floods early
DEFAULT_MAX_BODY_BYTES = 65_536


class _Request(BaseModel):
    # strict: "10" is not 10; forbid: an unknown field is an error, not silently ignored
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)


K = Annotated[int, Field(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")]
AT = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_TIMESTAMP,
        description="Unix seconds the ranking is for (a replay or a backtest); "
        "default: the server's clock",
    ),
]
USER_ID = Field(
    pattern=ID_PATTERN,
    description="the user's pseudonym (u_ + 16 hex), or their raw id when the server "
    "holds the ingestion key (the MovieLens demo does)",
)


class RecommendRequest(_Request):
    user_id: str = USER_ID
    k: K = 10
    exclude_seen: bool = Field(True, description="never recommend items already in the history")
    at: AT = None


class Event(_Request):
    item_id: str = Field(pattern=ID_PATTERN, description="a catalogue item id")
    timestamp: int = Field(ge=0, le=MAX_TIMESTAMP, description="Unix seconds")


class UserEvent(_Request):
    user_id: str = USER_ID
    item_id: str = Field(pattern=ID_PATTERN, description="a catalogue item id")
    timestamp: int = Field(
        ge=0, le=MAX_TIMESTAMP, description="Unix seconds; at most a day past the server's clock"
    )


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
    at: AT = None


class SimilarRequest(_Request):
    """Exactly one of ``item_id`` and ``text``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        hide_input_in_errors=True,
        # the schema says what the validator enforces: one of the two, never both
        json_schema_extra={
            "oneOf": [
                {"required": ["item_id"], "not": {"required": ["text"]}},
                {"required": ["text"], "not": {"required": ["item_id"]}},
            ]
        },
    )
    item_id: str | None = Field(None, pattern=ID_PATTERN, description="a catalogue item")
    text: str | None = Field(
        None, min_length=1, max_length=MAX_TEXT, description="free text, encoded by MiniLM"
    )
    k: K = 10

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(
            key in data and data[key] is None for key in ("item_id", "text")
        ):
            raise ValueError("item_id and text are strings: leave the other one out")
        return data

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


# -- responses ------------------------------------------------------------------------------


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
    fallback: bool = Field(
        False,
        description="true when popularity stood in for the model: the user is unknown "
        "(a raw id sent to a server without the ingestion key reads as unknown)",
    )
    ignored_events: int = Field(0, description="history events on unknown items, skipped")


class Similar(BaseModel):
    items: list[Item]
    model_version: str


class Added(BaseModel):
    item_id: str
    recommendable: bool = Field(description="the model scores it from its text, no retraining")
    catalogue_size: int
    model_version: str


class Recorded(BaseModel):
    recorded: bool = Field(description="false when the same event was already recorded")
    events: int = Field(description="the user's live events (after training) now")


class ModelCard(BaseModel):
    name: str
    version: str
    metrics: dict[str, Any]
    data_hash: str | None
    commit: str | None
    blessing: dict[str, Any]
    quantization: str
    catalogue_size: int


class Problem(BaseModel):
    field: str = Field(description="the field at fault (a known field name, or <unknown field>)")
    problem: str


class Error(BaseModel):
    """Every 4xx and 5xx body: a message, and for a 400 the fields at fault."""

    error: str
    detail: list[Problem] | None = None


REQUESTS: dict[str, type[_Request]] = {
    "/recommend": RecommendRequest,
    "/recommend/session": SessionRequest,
    "/similar": SimilarRequest,
    "/items": NewItem,
    "/events": UserEvent,
}
KNOWN_FIELDS = frozenset(
    name
    for model in (*REQUESTS.values(), Event, Profile)
    for name in model.model_fields  # type: ignore[attr-defined]
)
