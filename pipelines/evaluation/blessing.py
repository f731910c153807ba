"""The blessing rule: may the selected model replace the served champion?

A pure function of numbers the pipeline already measured (``evaluate`` and
``coldstart``); the ``package`` stage applies it and writes its reasons to
``artifacts/release/blessing.json``. A challenger is blessed when

1. it clears every absolute floor (validation metrics, e.g. ``ndcg@10 >= 0.03``);
2. when a champion exists, it beats the champion's validation ``metric`` by at
   least ``margin`` (absolute), and
3. it does not regress either cold-start slice by more than
   ``coldstart_tolerance`` (relative to the champion): new items
   (Recall@item_k of the strict new-item protocol) and new users (NDCG@user_k
   with zero events, profile only).

On the first run (no champion) the floors alone decide. Validation numbers
only, never test (design.md §4): test stays a report. A slice either model
lacks (the model was not in ``coldstart.models``) cannot be compared: the
reason says so, and ``require_coldstart`` makes that a failure instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BlessingRule:
    # absolute floors on validation metrics; popularity scores ~0.033 NDCG@10 on
    # ML-100K, so a floor just under it only rejects a broken model
    floors: dict[str, float] = field(default_factory=lambda: {"ndcg@10": 0.03})
    metric: str = "ndcg@10"  # the champion comparison uses the selection metric
    margin: float = 0.0  # absolute; 0 means "strictly better"
    coldstart_tolerance: float = 0.05  # relative regression allowed on each cold slice
    require_coldstart: bool = False  # a missing cold-start slice fails instead of passing

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0 <= self.coldstart_tolerance < 1:
            raise ValueError(
                f"coldstart_tolerance must be in [0, 1), got {self.coldstart_tolerance}"
            )


@dataclass(frozen=True)
class Evidence:
    """What the rule looks at for one model."""

    model: str
    valid: dict[str, float]  # validation metrics of the evaluate stage
    new_items: float | None = None  # new-item Recall@item_k (None: not measured)
    new_users: float | None = None  # new-user NDCG@user_k at k = 0 events

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "valid": dict(self.valid),
            "new_items": self.new_items,
            "new_users": self.new_users,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Evidence:
        return cls(
            model=str(values["model"]),
            valid={k: float(v) for k, v in dict(values.get("valid", {})).items()},
            new_items=values.get("new_items"),
            new_users=values.get("new_users"),
        )


@dataclass(frozen=True)
class Decision:
    blessed: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"blessed": self.blessed, "reasons": list(self.reasons)}


def coldstart_slices(
    coldstart: dict[str, Any], model: str, item_k: int, user_k: int
) -> tuple[float | None, float | None]:
    """(new-item Recall@item_k, new-user NDCG@user_k at 0 events) of ``model`` from the
    coldstart stage's ``metrics.json``; None for a slice that was not measured."""
    result = coldstart.get("models", {}).get(model)
    if result is None:
        return None, None
    items = result.get("new_items", {}).get("model", {}).get(f"recall@{item_k}")
    users = result.get("new_users", {}).get("shots", {}).get("0", {}).get(f"ndcg@{user_k}")
    return (None if items is None else float(items)), (None if users is None else float(users))


def _slice(
    name: str, challenger: float | None, champion: float | None, rule: BlessingRule
) -> tuple[bool, str]:
    if champion is None or challenger is None:
        missing = "challenger" if challenger is None else "champion"
        ok = not rule.require_coldstart
        return ok, f"{name}: not measured for the {missing}, not compared"
    lowest = champion * (1 - rule.coldstart_tolerance)
    ok = challenger >= lowest
    verdict = "ok" if ok else "regressed"
    return ok, (
        f"{name}: {challenger:.4f} vs champion {champion:.4f} "
        f"(lowest allowed {lowest:.4f}, tolerance {rule.coldstart_tolerance:.0%}): {verdict}"
    )


def bless(challenger: Evidence, champion: Evidence | None, rule: BlessingRule) -> Decision:
    """Apply the rule (module docstring); every check leaves one reason, passed or not."""
    reasons: list[str] = []
    passed = True
    for metric, floor in sorted(rule.floors.items()):
        value = challenger.valid.get(metric)
        ok = value is not None and value >= floor
        passed &= ok
        shown = "missing" if value is None else f"{value:.4f}"
        reasons.append(f"floor valid {metric}: {shown} >= {floor:.4f}: {'ok' if ok else 'failed'}")
    if champion is None:
        reasons.append("no champion yet: the floors alone decide")
        return Decision(passed, tuple(reasons))

    ours, theirs = challenger.valid.get(rule.metric), champion.valid.get(rule.metric)
    if ours is None or theirs is None:
        passed = False
        reasons.append(f"valid {rule.metric} missing for the challenger or the champion")
    else:
        ok = ours >= theirs + rule.margin and ours > theirs
        passed &= ok
        reasons.append(
            f"valid {rule.metric}: {ours:.4f} vs champion {champion.model} "
            f"{theirs:.4f} (margin {rule.margin:.4f}): {'better' if ok else 'not better'}"
        )
    for name, ours_slice, theirs_slice in (
        ("new items", challenger.new_items, champion.new_items),
        ("new users", challenger.new_users, champion.new_users),
    ):
        ok, reason = _slice(name, ours_slice, theirs_slice, rule)
        passed &= ok
        reasons.append(reason)
    return Decision(passed, tuple(reasons))
