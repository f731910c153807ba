"""Shilling attacks and their detector: the generators build what they claim, the detector
flags an obvious attack and not a clean batch, and a flagged batch never reaches data/."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.core import schema
from pipelines.core.config import IngestParams, ShillingParams
from pipelines.data.append import append_batch
from pipelines.data.privacy import PUBLIC_DEMO_KEY, pseudonymise_id
from pipelines.data.shilling import (
    AttackSpec,
    DetectorSettings,
    attack_tables,
    detect,
    item_stats,
    pick_target,
    profiles_for_share,
)
from pipelines.loop.stream import write_batch
from tests.data.files import tree

DAY = 86_400
START = 874_281_600  # 1997-09-15, a Monday
N_ITEMS = 80
# the fixture is small (60 users): profiles of 10+ events are scored, as on real data
SETTINGS = DetectorSettings(min_events=10, reference_users=1000)


def _people(n_users: int, first: int, start: int, seed: int) -> pd.DataFrame:
    """Users who rate popular items most (Zipf-like) and agree on each item's quality."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_ITEMS + 1) ** 1.1
    weights /= weights.sum()
    quality = np.random.default_rng(99).uniform(2.0, 4.5, N_ITEMS)  # the same for everyone
    rows = []
    for u in range(first, first + n_users):
        items = rng.choice(N_ITEMS, size=int(rng.integers(15, 30)), replace=False, p=weights)
        t0 = start + int(rng.integers(0, 6 * DAY))
        for j, i in enumerate(items):
            r = float(np.clip(np.rint(quality[i] + rng.normal(0, 0.7)), 1, 5))
            rows.append((f"p{u}", str(i + 1), r, t0 + 30 * j))
    return pd.DataFrame(rows, columns=list(schema.INTERACTION_COLUMNS))


def _raw_users(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame(
        {
            schema.USER_ID: ids,
            "age": [30.0] * len(ids),
            schema.GENDER: ["F"] * len(ids),
            schema.OCCUPATION: ["writer"] * len(ids),
            "zip": ["02139"] * len(ids),
        }
    )


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            schema.ITEM_ID: [str(i + 1) for i in range(N_ITEMS)],
            schema.TITLE: [f"Movie {i + 1}" for i in range(N_ITEMS)],
            schema.YEAR: [1990] * N_ITEMS,
            schema.GENRES: [["Drama"]] * N_ITEMS,
        }
    )


@pytest.fixture(scope="module")
def held() -> pd.DataFrame:
    return _people(60, 0, START, seed=1)


def _attack(held: pd.DataFrame, kind: str, n: int = 5, seed: int = 0) -> AttackSpec:
    return AttackSpec(
        kind,
        pick_target(held, low=3, high=8, seed=seed),
        n,
        start=START + 14 * DAY,
        filler_size=20,
        selected_size=3,
        seed=seed,
    )


# ---- generators -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "average", "bandwagon"])
def test_an_attack_pushes_its_target_at_the_top_rating_in_its_window(held, kind):
    spec = _attack(held, kind)
    tables = attack_tables(spec, held)
    events = tables["interactions"]
    assert events[schema.USER_ID].nunique() == spec.n_profiles
    assert set(tables["users"][schema.USER_ID]) == set(events[schema.USER_ID])
    pushed = events[events[schema.ITEM_ID] == spec.target]
    assert len(pushed) == spec.n_profiles and (pushed[schema.RATING] == 5.0).all()
    extra = spec.selected_size if kind == "bandwagon" else 0
    per_user = events.groupby(schema.USER_ID).size()
    assert (per_user == 1 + extra + spec.filler_size).all()
    assert events[schema.RATING].between(1, 5).all()  # whole stars on the scale
    assert (events[schema.RATING] % 1 == 0).all()
    assert events[schema.TIMESTAMP].between(spec.start, spec.start + spec.window - 1).all()
    assert not events.duplicated([schema.USER_ID, schema.ITEM_ID]).any()
    # the target is each profile's first event: it is trained on, never held out
    first = events.sort_values(schema.TIMESTAMP, kind="stable").groupby(schema.USER_ID).head(1)
    assert (first[schema.ITEM_ID] == spec.target).all()


def test_bandwagon_rates_the_most_popular_items_highest(held):
    spec = _attack(held, "bandwagon")
    events = attack_tables(spec, held)["interactions"]
    popular = [i for i in item_stats(held).index if i != spec.target][: spec.selected_size]
    chosen = events[events[schema.ITEM_ID].isin(popular)]
    assert len(chosen) == spec.n_profiles * spec.selected_size
    assert (chosen[schema.RATING] == 5.0).all()


def test_average_filler_sits_closer_to_the_item_means_than_random(held):
    means = item_stats(held)["mean"]

    def deviation(kind: str) -> float:
        spec = _attack(held, kind, n=30, seed=3)
        events = attack_tables(spec, held)["interactions"]
        filler = events[events[schema.ITEM_ID] != spec.target]
        return float((filler[schema.RATING] - filler[schema.ITEM_ID].map(means)).abs().mean())

    assert deviation("average") < deviation("random")


def test_bad_attack_settings_are_refused_with_a_clear_message(held):
    with pytest.raises(ValueError, match="attack kind must be one of"):
        AttackSpec("segment", "1", 5, start=START)
    with pytest.raises(ValueError, match="at least 1 profile"):
        AttackSpec("random", "1", 0, start=START)
    with pytest.raises(ValueError, match="not in data/"):
        attack_tables(AttackSpec("random", "no-such-item", 2, start=START), held)
    with pytest.raises(ValueError, match="share must be in"):
        profiles_for_share(943, 5)
    assert profiles_for_share(943, 0.01) == 9 and profiles_for_share(943, 0.05) == 47


# ---- detector -----------------------------------------------------------------------------------


def test_a_clean_batch_of_new_people_is_not_suspect(held):
    clean = _people(12, 100, START + 14 * DAY, seed=2)
    verdict = detect(clean, held, SETTINGS)
    assert verdict.profiles == 12
    assert not verdict.suspect and verdict.flagged == () and verdict.target is None


# the average attack is not "obvious" on an 80-item catalogue (its ratings sit at the item
# means and the catalogue is too small for obscure filler to show): bench/shilling.py
# measures it on MovieLens instead
@pytest.mark.parametrize("kind", ["random", "bandwagon"])
def test_an_obvious_attack_is_flagged_with_its_target_and_users(held, kind):
    spec = _attack(held, kind)
    clean = _people(12, 100, START + 14 * DAY, seed=2)
    batch = pd.concat([clean, attack_tables(spec, held)["interactions"]], ignore_index=True)
    verdict = detect(batch, held, SETTINGS)
    assert verdict.suspect and verdict.score >= SETTINGS.threshold
    assert verdict.target == spec.target
    fakes = {u for u in batch[schema.USER_ID] if u.startswith("shill")}
    assert set(verdict.flagged) <= fakes and len(verdict.flagged) >= SETTINGS.min_profiles
    report = verdict.to_dict()
    assert report["target"] == spec.target and set(report["suspicion"]) == set(verdict.flagged)
    assert json.dumps(report)  # the evidence is JSON-ready for the quarantine report


def test_too_few_pushers_are_no_attack(held):
    spec = _attack(held, "random", n=SETTINGS.min_profiles - 1)
    verdict = detect(attack_tables(spec, held)["interactions"], held, SETTINGS)
    assert not verdict.suspect  # one or two odd profiles are people, not an attack


def test_shilling_settings_are_validated_with_clear_errors():
    assert IngestParams().shilling.check is True
    with pytest.raises(ValidationError, match="above z_cap"):
        ShillingParams(threshold=6.0, z_cap=5.0)
    with pytest.raises(ValidationError, match="min_profiles"):
        IngestParams(shilling={"min_profiles": 1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        IngestParams(shilling={"treshold": 2.0})


# ---- through the ingestion door -------------------------------------------------------------


@pytest.fixture
def door(tmp_path, held):
    """data/ holding ``held`` (appended as the first batch), and an append function."""
    landing = tmp_path / "landing"

    def run(tables: dict[str, pd.DataFrame], name: str, cfg: IngestParams | None = None):
        cfg = cfg or IngestParams()
        path = write_batch(tables, landing, name)
        return append_batch(
            cfg,
            path,
            data_dir=tmp_path / "data",
            quarantine_dir=tmp_path / "quarantine",
            key=PUBLIC_DEMO_KEY,
        )

    first = {
        "interactions": held,
        "items": _items(),
        "users": _raw_users(held[schema.USER_ID].unique()),
    }
    assert run(first, "week-00").accepted
    return tmp_path, run


def test_a_flagged_batch_is_quarantined_with_its_evidence_and_data_unchanged(door, held):
    tmp, run = door
    before = tree(tmp / "data")
    spec = _attack(held, "random")
    tables = attack_tables(spec, held)
    result = run(tables, "attack")
    assert result.status == "quarantined" and sum(result.added.values()) == 0
    assert any("shilling attack" in m for m in result.messages)
    assert tree(tmp / "data") == before
    report = json.loads((tmp / "quarantine" / "attack" / "report.json").read_text())
    assert report["accepted"] is False and report["shilling"]["target"] == spec.target
    fakes = {pseudonymise_id(u, PUBLIC_DEMO_KEY) for u in tables["users"][schema.USER_ID]}
    assert set(report["shilling"]["flagged_users"]) <= fakes
    assert "Shilling evidence" in (tmp / "quarantine" / "attack" / "report.md").read_text()
    assert result.counts["interactions"]["rejected"] >= SETTINGS.min_profiles


def test_a_clean_batch_passes_and_the_check_can_be_switched_off(door, held):
    _, run = door
    clean = _people(12, 100, START + 14 * DAY, seed=2)
    tables = {
        "interactions": clean,
        "items": _items().iloc[:0],
        "users": _raw_users(clean[schema.USER_ID].unique()),
    }
    assert run(tables, "clean").accepted
    off = IngestParams(shilling={"check": False})
    assert run(attack_tables(_attack(held, "random"), held), "attack-off", off).accepted
