"""The blessing rule: what a selected model must show before it is packaged and served.

1. It clears every absolute floor (validation metrics, e.g. ``ndcg@10 >= 0.03``).
2. With a champion, on the gate's paired comparison (``monitoring.gate``: both scored as
   served on the same newest events): the 95% interval of the difference in NDCG@k
   (challenger - champion) over the known users' events must have its lower bound at or
   above ``margin``. A margin of 0 or more asks for a shown gain; a negative margin is a
   non-inferiority test: the fresher model ships unless it is shown worse by more than
   ``-margin`` (a week gives a few thousand cases of ~60 users: an interval about ±0.015
   wide, so demanding a shown gain would keep an old champion almost every week).
3. The cold slices of the same comparison (events on items that arrived in the holdout,
   new users' events) block only when shown worse by more than ``coldstart_tolerance`` of
   the champion's number on them (their upper bound below that loss): they are small, and
   their intervals wide. A slice without cases is reported, and blocks only with
   ``require_coldstart``.

Without a comparison (no champion yet, or too few held-out cases) the floors decide.
Pure: the stage reads files and hands plain values in; every check leaves one reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KNOWN, COLD_SLICES = "known users", ("new items", "new users")


@dataclass(frozen=True)
class BlessingRule:
    # absolute floors on validation metrics; popularity scores ~0.033 NDCG@10 on
    # ML-100K, so a floor just under it only rejects a broken model
    floors: dict[str, float] = field(default_factory=lambda: {"ndcg@10": 0.03})
    margin: float = 0.0  # what the paired interval's lower bound must reach (< 0: non-inferiority)
    coldstart_tolerance: float = 0.05  # the same on each cold slice, as a share of the champion's
    require_coldstart: bool = False  # a cold slice without cases fails instead of passing
    k: int = 10  # the cutoff of the gate's NDCG

    def __post_init__(self) -> None:
        if not -1 < self.margin < 1:
            raise ValueError(f"margin must be in (-1, 1), got {self.margin}")
        if not 0 <= self.coldstart_tolerance < 1:
            raise ValueError(
                f"coldstart_tolerance must be in [0, 1), got {self.coldstart_tolerance}"
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
    coldstart stage's ``metrics.json``; None for a slice that was not measured (reported on
    the card, the gate compares its own cold slices)."""
    result = coldstart.get("models", {}).get(model)
    if result is None:
        return None, None
    items = result.get("new_items", {}).get("model", {}).get(f"recall@{item_k}")
    users = result.get("new_users", {}).get("shots", {}).get("0", {}).get(f"ndcg@{user_k}")
    return (None if items is None else float(items)), (None if users is None else float(users))


def _paired(entry: dict[str, Any], k: int) -> str:
    metric = f"ndcg@{k}"
    ours, theirs, diff = entry["challenger"][metric], entry["champion"][metric], entry["difference"]
    return (
        f"challenger {ours['mean']:.4f} [{ours['low']:.4f}, {ours['high']:.4f}] vs champion "
        f"{theirs['mean']:.4f} [{theirs['low']:.4f}, {theirs['high']:.4f}]; difference "
        f"{diff['mean']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}], p {diff['p_value']:.3f}, "
        f"on {entry['cases']} cases of {entry['users']} users"
    )


def bless(
    valid: dict[str, float], comparison: dict[str, Any] | None, rule: BlessingRule, why: str = ""
) -> Decision:
    """Apply the rule (module docstring) to the challenger's validation metrics and the gate's
    paired comparison (None: no comparison, for the reason ``why``)."""
    reasons: list[str] = []
    passed = True
    for metric, floor in sorted(rule.floors.items()):
        value = valid.get(metric)
        ok = value is not None and value >= floor
        passed &= ok
        shown = "missing" if value is None else f"{value:.4f}"
        reasons.append(f"floor valid {metric}: {shown} >= {floor:.4f}: {'ok' if ok else 'failed'}")
    if comparison is None:
        reasons.append(why or "no champion yet: the floors alone decide")
        return Decision(passed, tuple(reasons))

    known = comparison.get(KNOWN, {})
    if "difference" not in known:
        passed = False
        reasons.append(f"paired NDCG@{rule.k}: no held-out cases of known users to compare on")
    else:
        ok = known["difference"]["low"] >= rule.margin
        passed &= ok
        verdict = "ok" if ok else ("not shown better" if rule.margin >= 0 else "shown worse")
        reasons.append(
            f"paired NDCG@{rule.k} as served on the newest events: {_paired(known, rule.k)}; "
            f"lower bound >= {rule.margin:+.4f}: {verdict}"
        )
    for name in COLD_SLICES:
        entry = comparison.get(name, {})
        if "difference" not in entry:
            ok = not rule.require_coldstart
            passed &= ok
            reasons.append(f"{name}: no held-out cases, not compared")
            continue
        allowed = rule.coldstart_tolerance * entry["champion"][f"ndcg@{rule.k}"]["mean"]
        ok = entry["difference"]["high"] >= -allowed
        passed &= ok
        reasons.append(
            f"{name}: {_paired(entry, rule.k)}; not shown worse by more than {allowed:.4f} "
            f"({rule.coldstart_tolerance:.0%} of the champion's): {'ok' if ok else 'regressed'}"
        )
    return Decision(passed, tuple(reasons))
