"""Typed, frozen view of params.yaml, loaded once at the edge.

Stage entry points call `load_params()` and hand plain values down; nothing
below the entry points reads params.yaml. Unknown or mistyped keys fail with a
message naming the key, not a KeyError deep inside a stage.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.core.io import write_text
from pipelines.core.paths import PROJECT


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MovieLensSource(_Frozen):
    recbole_version: str = "1.2.1"


class TableSource(_Frozen):
    interactions: Path | None = None
    items: Path | None = None
    users: Path | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    genre_separator: str = "|"


# the usual spellings of "no value" in exported files (ingest.missing_values)
MISSING_VALUES: tuple[str, ...] = ("", "NULL", "null", "None", "N/A", "NA", "NaN", "nan", "-")
ZIP_WIDTH = 5  # US zip codes (ingest.zip_width)


class ShillingParams(_Frozen):
    """The shilling check on appended batches (pipelines/data/shilling.py, docs/own-data.md).

    A batch is suspect when at least ``min_profiles`` of its profiles, each with a
    suspicion of at least ``threshold``, give the same item the highest rating; it then goes
    to quarantine with the evidence and data/ is left unchanged. bench/shilling.py measures
    the false alarms on real MovieLens weeks and the detection rates (RESULTS.md).
    """

    check: bool = True
    # mean one-sided robust z-score over the five features: 2 = on average two robust
    # standard deviations out in the direction an attack moves them. No clean push group of
    # ML-100K scored above 1.65 (weeks 4-31) or 1.98 (overlapping 7-day windows): a thin
    # margin; the attacks' groups score about 2.2-2.9 (bench/shilling.py, RESULTS.md)
    threshold: float = Field(2.0, gt=0)
    # one odd profile is a person; an attack needs several accounts pushing one item
    min_profiles: int = Field(3, ge=2)
    # profiles with fewer events in the batch are not scored: their features are noise
    min_events: int = Field(10, ge=2)
    neighbours: int = Field(10, ge=1)  # DegSim: mean similarity of the k most similar users
    # an item mean from fewer ratings in data/ is no yardstick (a new release rated once)
    min_item_ratings: int = Field(5, ge=1)
    # each feature's z-score is capped here, so one wild feature alone cannot flag a profile
    z_cap: float = Field(5.0, gt=0)
    # data/'s users sampled as the yardstick and the DegSim neighbours: bounds the cost on
    # large logs (a users x users similarity matrix)
    reference_users: int = Field(1000, ge=10)

    @model_validator(mode="after")
    def _reachable(self) -> ShillingParams:
        if self.threshold > self.z_cap:
            raise ValueError(
                f"ingest.shilling.threshold {self.threshold} is above z_cap {self.z_cap}: "
                "suspicion is a mean of z-scores capped at z_cap, so no batch could be flagged"
            )
        return self


class IngestParams(_Frozen):
    source: Literal["movielens", "table"] = "movielens"
    movielens: MovieLensSource = MovieLensSource()
    table: TableSource = TableSource()
    # cells of your files that mean "no value", matched exactly after trimming spaces (case
    # counts: MovieLens's occupation "none" is an answer, not a blank). An id holding one
    # rejects its row (it would otherwise become a user or item called "NULL"); anywhere else
    # the cell is empty (no rating, the title falls back to the id, a profile field unknown)
    missing_values: tuple[str, ...] = MISSING_VALUES
    # a zip column read as numbers (a Parquet int column, or a CSV column of digits only, as a
    # spreadsheet leaves it) has lost its leading zeros: codes shorter than this are zero-padded
    # (2139 is US zip 02139, region 021, not 213); 0 reads them as written (4 for Australia)
    zip_width: int = Field(ZIP_WIDTH, ge=0, le=10)
    age_bands: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
    # at most 3: a longer zip prefix can single out a person (HIPAA Safe Harbor keeps 3)
    region_digits: int = Field(3, ge=1, le=3)
    rating_range: tuple[float, float] = (1.0, 5.0)
    # explicit: every event needs a rating; implicit: ratings may be blank (clicks, views);
    # auto: explicit when the source has a rating column, implicit when it has none
    feedback: Literal["auto", "explicit", "implicit"] = "auto"
    # appended batches only: profiles that push one item together are quarantined
    shilling: ShillingParams = ShillingParams()

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, bands: tuple[int, ...]) -> tuple[int, ...]:
        if not bands or list(bands) != sorted(set(bands)):
            raise ValueError("age_bands must be a non-empty, strictly increasing list of ages")
        return bands

    @field_validator("rating_range")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] > bounds[1]:
            raise ValueError("rating_range must be [lowest, highest]")
        return bounds


TieBreak = Literal["item_id", "source_order"]


class SplitParams(_Frozen):
    min_count: int = Field(5, ge=1)
    # source_order: same-second events keep the source's order (a random tie-break on
    # ML-100K); item_id only demonstrates the leak an id order plants (design.md §4)
    tie_break: TieBreak = "source_order"
    # what must be left after the k-core filter, or split refuses (naming these settings):
    # below them the later stages have nothing to learn from or judge (the cold-start
    # draws, 10% of users and 20% of items, would hold one user and two items)
    min_users: int = Field(10, ge=1)
    min_items: int = Field(10, ge=1)
    min_events: int = Field(100, ge=1)


class EmbedParams(_Frozen):
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(128, ge=1, le=4096)
    max_length: int = Field(64, ge=8, le=512)
    device: Literal["auto", "cpu", "cuda"] = "auto"


ModelName = Literal[
    "popularity", "itemknn", "ease", "text_zero_shot", "sasrec", "fusion_transformer"
]
MODEL_NAMES: tuple[str, ...] = ModelName.__args__  # type: ignore[attr-defined]


class TrainParams(_Frozen):
    """Which models to fit, and the values each one's typed config is built from.

    A model's section holds keys of its config dataclass (``pipelines/models/<name>.py``),
    where every default and its reason lives; a gradient model's section may also hold
    ``trainer:``, values of the training loop (``TrainerConfig``) for that model alone,
    applied over the shared ``trainer`` section. ``training.fit.resolve`` builds and
    checks them, naming the offending key.
    """

    models: tuple[ModelName, ...] = MODEL_NAMES  # type: ignore[assignment]
    trainer: dict[str, Any] = Field(default_factory=dict)
    popularity: dict[str, Any] = Field(default_factory=dict)
    itemknn: dict[str, Any] = Field(default_factory=dict)
    ease: dict[str, Any] = Field(default_factory=dict)
    text_zero_shot: dict[str, Any] = Field(default_factory=dict)
    sasrec: dict[str, Any] = Field(default_factory=dict)
    fusion_transformer: dict[str, Any] = Field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """A copy of model ``name``'s section ({} for a model params.yaml has no section for)."""
        return dict(getattr(self, name, None) or {})


class SearchDimension(_Frozen):
    """One hyperparameter's range: float/int between low and high, or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} dimension needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale dimension needs low > 0")
        return self


class SearchSpace(_Frozen):
    """One model's search space: keys of its config, and keys of the training loop."""

    model: dict[str, SearchDimension] = Field(default_factory=dict)
    trainer: dict[str, SearchDimension] = Field(default_factory=dict)


class TuneParams(_Frozen):
    # trials per model; a model without a budget (or a budget of 0) is trained with its
    # params.yaml values as they are: that is how a value is pinned
    trials: dict[ModelName, int] = Field(default_factory=dict)
    spaces: dict[ModelName, SearchSpace] = Field(default_factory=dict)
    # stop a study after this long even with trials left: a safety net, set well above what
    # the budget takes, because a study the clock cuts short depends on the machine's speed
    # and load, and so do tune/best.json and dvc.lock (the tune stage warns when it binds)
    timeout_minutes: float = Field(60.0, gt=0)
    # the median pruner judges a trial only after this many validation reports
    pruner_warmup: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _budget_has_a_space(self) -> TuneParams:
        missing = [
            model for model, trials in self.trials.items() if trials and model not in self.spaces
        ]
        if missing:
            raise ValueError(f"trials given but no search space for: {', '.join(missing)}")
        return self


class ColdStartParams(_Frozen):
    # the flagship and the text-only model; ease and itemknn are the fold-in baselines
    models: tuple[ModelName, ...] = ("fusion_transformer", "text_zero_shot", "ease", "itemknn")
    item_share: float = Field(0.2, gt=0, lt=1)  # share of items made strictly cold
    user_share: float = Field(0.1, gt=0, lt=1)  # share of users held out of training
    shots: tuple[int, ...] = (0, 1, 3, 5)  # events a new user has given
    item_k: int = Field(20, ge=1)
    user_k: int = Field(10, ge=1)
    warm_folds: int = Field(0, ge=0)  # >0 adds a leak-free cross-fitted warm ceiling
    batch_size: int = Field(256, ge=1)
    # a cell measured on fewer users prints n/a (null in metrics.json), not a number:
    # a mean of a handful of users is an anecdote (ML-100K's cells hold 94 users or more)
    min_users: int = Field(10, ge=1)


class EvaluateParams(_Frozen):
    k: int = Field(10, ge=1, le=100)
    batch_size: int = Field(256, ge=1)
    # true (design.md §4): items already in the user's history are never recommended, so a
    # test target the user had before is a certain miss. false: repeat consumption (a shop's
    # staples bought again) is part of the task; every item stays a candidate. One setting
    # for evaluate, tune, early stopping and cold start; the served model card carries it
    # as the default of /recommend's exclude_seen (serve.exclude_seen in the card)
    mask_history: bool = True
    # behaviour clusters (features.behaviour: hour of day, weekend, gaps, sitting length) the
    # fairness table reports NDCG for; 0: no rhythm segment
    rhythm_clusters: int = Field(4, ge=0, le=12)


# the rank metrics the evaluate stage writes per split, at its cutoff evaluate.k
RANK_METRICS = ("ndcg", "hr", "mrr", "precision", "recall", "f1")


class SelectParams(_Frozen):
    # a validation rank metric at the evaluate stage's cutoff: ndcg@10 with evaluate.k 10
    metric: str = Field("ndcg@10", pattern=rf"^({'|'.join(RANK_METRICS)})@[1-9][0-9]*$")
    # no winner is crowned on fewer evaluated users: on 100 users the standard error of
    # NDCG@10 is ~0.025, about the gap between popularity and EASE on ML-100K (0.03)
    min_users: int = Field(100, ge=1)


class GateParams(_Frozen):
    """Champion and challenger on the same newest events (design.md §6, stage ``gate``)."""

    # the newest days of data/ the challenger's gate fit leaves out and both are scored on:
    # one replayed week, so the gate judges the week the loop just appended
    holdout_days: float = Field(7.0, gt=0)
    # fewer held-out events of known users than this: no comparison (one hit among a few
    # dozen cases moves NDCG@10 by ~0.01), the floors alone decide
    min_cases: int = Field(200, ge=1)


class PackageParams(_Frozen):
    """The blessing gate: what a model must show before it is packaged and served."""

    # validation floors every blessed model clears; popularity scores ~0.033 on ML-100K
    floors: dict[str, float] = Field(default_factory=lambda: {"ndcg@10": 0.03})
    # what the lower bound of the gate's paired interval (challenger - champion NDCG@k on
    # the newest events, as served) must reach: >= 0 asks for a shown gain, < 0 ships a
    # fresher model unless it is shown worse by more than -margin (non-inferiority)
    margin: float = Field(-0.01, gt=-1, lt=1)
    # the gate's cold slices (items new in the holdout, new users) block a release only when
    # shown worse by more than this share of the champion's number on them
    coldstart_tolerance: float = Field(0.05, ge=0, lt=1)
    # true: a cold slice without held-out cases blocks the release
    require_coldstart: bool = False


class ServeParams(_Frozen):
    # none | int8 | bf16; int8 only where bench/serve.py --quantize shows < 1% NDCG loss
    quantization: Literal["none", "int8", "bf16"] = "none"
    cache_entries: int = Field(10_000, ge=0)  # per-user results, keyed by model version


class MonitoringParams(_Frozen):
    """The monitor's drift decision (pipelines/monitoring/drift.py) and quality curve."""

    # below this many events in a batch the monitor decides nothing (too noisy to judge)
    min_events: int = Field(200, ge=1)
    # the family-wise false-alarm rate the decision aims at: drift when a signal's p-value
    # is below alpha / signals (bench/drift.py measures the real rate on unchanged windows)
    alpha: float = Field(0.05, gt=0, lt=1)
    # draws of the null: the reference's own weeks, each against the weeks before it, their
    # users resampled to the batch's number (spread over the weeks)
    null_resamples: int = Field(1000, ge=10)
    k: int = Field(10, ge=1, le=100)  # the quality curve's NDCG@k and HR@k
    # vectors a side in the report's t-SNE plot of the embeddings
    embedding_plot_rows: int = Field(500, ge=50)
    # reference rows kept for Evidently's report (a sample; the decision uses all)
    reference_rows: int = Field(20_000, ge=100)
    seed: int = 42
    # behaviour clusters of the reference's users (features.behaviour); the report shows the
    # batch's users' shares beside the reference's, for reading: not a decision signal (its
    # false-alarm rate is not measured). 0: not shown
    rhythm_clusters: int = Field(4, ge=0, le=12)


class ReplayParams(_Frozen):
    initial_weeks: int = Field(12, ge=1)  # design.md §6: to 1997-12-07 on ML-100K
    # when a replayed week retrains: "schedule" as the retrain DAG does (on drift or every
    # Monday, and every replayed week is a new Monday), or only on "drift"
    retrain_on: Literal["schedule", "drift"] = "schedule"
    # the MovieLens replay uses the public demo key, as `make ingest` does
    demo_key: bool = True


class RetrainParams(_Frozen):
    # seconds a newly released Bento gets to answer /readyz; after that the old one keeps
    # serving (the server loads torch and the model before it is ready)
    ready_timeout: float = Field(180.0, gt=0)


class Params(_Frozen):
    seed: int = 42
    ingest: IngestParams = IngestParams()
    split: SplitParams = SplitParams()
    embed: EmbedParams = EmbedParams()
    train: TrainParams = TrainParams()
    tune: TuneParams = TuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    coldstart: ColdStartParams = ColdStartParams()
    select: SelectParams = SelectParams()
    gate: GateParams = GateParams()
    package: PackageParams = PackageParams()
    serve: ServeParams = ServeParams()
    monitoring: MonitoringParams = MonitoringParams()
    replay: ReplayParams = ReplayParams()
    retrain: RetrainParams = RetrainParams()

    @model_validator(mode="after")
    def _metric_is_evaluated(self) -> Params:
        k = int(self.select.metric.split("@")[1])
        if k != self.evaluate.k:
            raise ValueError(
                f"select.metric {self.select.metric} needs evaluate.k: {k} (the evaluate stage "
                f"computes its metrics at evaluate.k, now {self.evaluate.k})"
            )
        evaluated = {f"{name}@{self.evaluate.k}" for name in RANK_METRICS}
        unknown = sorted(set(self.package.floors) - evaluated)
        if unknown:
            raise ValueError(
                f"package.floors names {', '.join(unknown)}, which the evaluate stage does not "
                f"compute (it writes {', '.join(sorted(evaluated))} at evaluate.k)"
            )
        return self


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or holds a value out of bounds."""


class TooLittleData(ParamsError):
    """The data is below a size setting: its message says how many were left and which
    setting to change (a stage refuses rather than publish numbers nobody should use)."""


def read_params_file(path: Path = PROJECT.params) -> dict[str, Any]:
    """params.yaml as plain data (the one place a params file is parsed)."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as err:
        raise ParamsError(f"{path} not found: the pipeline needs its params file") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err


def validate_params(raw: dict[str, Any], path: Path | str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        raise ParamsError(f"{path} has invalid values: {problems}") from err


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_params(path: Path = PROJECT.params) -> Params:
    return validate_params(read_params_file(path), path)


# ---- overrides: the `-S key=value` lines of `dvc exp run` and of profiles/*.args ----------


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """``-S a.b=value`` lines as a dict of dotted keys to YAML values; blank lines and
    ``#`` comments are skipped."""
    out: dict[str, Any] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        flag, _, assignment = line.partition(" ")
        key, sep, value = assignment.strip().partition("=")
        if flag != "-S" or not sep or not key:
            raise ParamsError(f"expected '-S key=value', got {raw.strip()!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _set_dotted(document: Any, dotted: str, value: Any) -> bool:
    """Set ``a.b.c`` in a nested mapping whose sections exist; True when the value changed."""
    *parents, leaf = dotted.split(".")
    node = document
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"{dotted}: params.yaml has no section {part!r} there")
        node = node[part]
    changed = node.get(leaf) != value
    node[leaf] = value
    return changed


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted key set; its parent sections must exist, so a
    misspelt section fails here (a misspelt key fails when the params are validated)."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    for dotted, value in overrides.items():
        _set_dotted(out, dotted, value)
    return out


def write_overrides(path: Path, overrides: dict[str, Any]) -> list[str]:
    """Set each dotted key of ``overrides`` in the params file itself, its comments, key
    order and quoting kept; returns the keys whose value changed.

    Validated first (``overridden_params``): a bad key or value raises ParamsError and
    the file is not touched; then it is rewritten in one atomic step."""
    from ruamel.yaml import YAML  # round-trip YAML, only for this rewrite

    overridden_params(path, overrides)
    round_trip = YAML()
    round_trip.width = 100
    round_trip.preserve_quotes = True
    document = round_trip.load(Path(path).read_text())
    changed = [
        dotted for dotted, value in overrides.items() if _set_dotted(document, dotted, value)
    ]
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    write_text(buffer.getvalue(), path)
    return changed


def overridden_params(path: Path, overrides: dict[str, Any]) -> tuple[str, Params]:
    """(YAML text, typed params) of ``path`` with ``overrides`` applied, validated before
    anything is written: a replay workspace's params.yaml."""
    raw = with_overrides(read_params_file(path), overrides)
    return yaml.safe_dump(raw, sort_keys=False), validate_params(raw, f"{path} with overrides")
