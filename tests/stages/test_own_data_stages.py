"""The stages on a tiny shop log (issue 20): size guards that refuse with the numbers and the
setting, n/a for empty cells, no demographics, repeat consumption, the served protocol."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import Params
from pipelines.core.io import write_json, write_npy, write_parquet
from pipelines.core.paths import PROJECT
from pipelines.data.split import catalogue, split_interactions, user_table
from pipelines.features.dataset import load_dataset, train_data
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import build_sequences
from pipelines.models import build_model
from pipelines.stages import coldstart, evaluate, select, split, train

UNKNOWN_PROFILE = {c: schema.UNKNOWN for c in schema.PROFILE_COLUMNS}


def shop_events(n_users: int, n_items: int, seed: int = 0) -> pd.DataFrame:
    """Each user buys 8 items; a third of the purchases repeat one of their own items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        bought: list[int] = []
        for t in range(8):
            again = bought and rng.random() < 0.35
            item = int(rng.choice(bought)) if again else int(rng.integers(n_items))
            bought.append(item)
            rows.append((f"u_{u:016x}", f"SKU-{item}", 1_700_000_000 + 3600 * (8 * u + t)))
    return pd.DataFrame(rows, columns=[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP])


def write_data(folder: Path, events: pd.DataFrame) -> Path:
    """data/ as ingestion writes it for a shop: no ratings, no years, no demographics."""
    folder.mkdir(parents=True)
    items = sorted(events[schema.ITEM_ID].unique())
    events.assign(**{schema.RATING: np.nan})[list(schema.INTERACTION_COLUMNS)].to_parquet(
        folder / "interactions.parquet"
    )
    pd.DataFrame(
        {
            schema.ITEM_ID: items,
            schema.TITLE: [f"Product {i}" for i in items],
            schema.YEAR: pd.array([None] * len(items), dtype="Int64"),
            schema.GENRES: [[] for _ in items],
        }
    ).to_parquet(folder / "items.parquet")
    users = sorted(events[schema.USER_ID].unique())
    pd.DataFrame({schema.USER_ID: users, **UNKNOWN_PROFILE}).to_parquet(folder / "users.parquet")
    return folder


def write_features(root: Path, events: pd.DataFrame) -> tuple[Path, Path, Path]:
    """features/, the split's items and seeded random item vectors, as the stages read them."""
    labelled = split_interactions(events, 2)
    users = pd.DataFrame({schema.USER_ID: sorted(events[schema.USER_ID].unique())})
    users = users.assign(**UNKNOWN_PROFILE)
    table = user_table(labelled, users)
    items = root / "split" / PROJECT.split_items.name
    item_frame = pd.DataFrame({schema.ITEM_ID: labelled[schema.ITEM_ID].unique()})
    item_frame = item_frame.assign(title="Product", year=pd.NA, genres=[[]] * len(item_frame))
    write_parquet(catalogue(labelled, item_frame), items)
    features = root / "features"
    write_parquet(build_sequences(labelled), features / PROJECT.sequences.name)
    vocabulary = profile_vocabulary(table)
    write_parquet(encode_profiles(table, vocabulary), features / PROJECT.profiles.name)
    write_json(vocabulary, features / PROJECT.profile_vocab.name)
    n_items = labelled[schema.ITEM_IDX].nunique()
    vectors = np.random.default_rng(0).normal(size=(n_items, 8)).astype(np.float32)
    embeddings = root / "embeddings" / PROJECT.item_embeddings.name
    write_npy(vectors, embeddings)
    return features, items, embeddings


def params_file(root: Path, text: str) -> Path:
    path = root / "params.yaml"
    path.write_text(text)
    return path


# ---- split: a refusal that says how many were left and which setting to change -----------


def test_split_refuses_a_batch_the_k_core_empties_and_writes_nothing(tmp_path, capsys) -> None:
    data = write_data(tmp_path / "data", shop_events(6, 40).groupby(schema.USER_ID).head(2))
    out = tmp_path / "split"
    params = params_file(tmp_path, "seed: 42\n")
    code = split.main(["--data", str(data), "--out", str(out), "--params", str(params)])
    assert code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("split: after the 5-core filter (split.min_count) 0 users, 0 items")
    assert "split.min_users" in first and "SKU-" not in first and "u_" not in first
    assert not out.exists()


def test_split_reports_the_repeat_share(tmp_path, caplog) -> None:
    data = write_data(tmp_path / "data", shop_events(40, 30))
    with caplog.at_level(logging.WARNING):
        stats = split.run(Params(), data=data, out=tmp_path / "split")
    assert 0 < stats["test_repeat_share"] < 1
    assert "certain misses while evaluate.mask_history is true" in caplog.text


# ---- select: no winner on too few users ----------------------------------------------------


def test_select_crowns_no_winner_on_too_few_users(tmp_path, capsys) -> None:
    def measured(users: int) -> dict:
        split_metrics = {"ndcg@10": 0.1, "hr@10": 0.2, "mrr@10": 0.05, "coverage@10": 0.3}
        return {s: {**split_metrics, "users": users} for s in ("valid", "test")}

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"ease": measured(32), "popularity": measured(32)}))
    out = tmp_path / "selection"
    argv = ["--metrics", str(metrics), "--tuned", str(tmp_path / "none"), "--out", str(out)]
    assert select.main([*argv, "--params", str(params_file(tmp_path, "seed: 42\n"))]) == 2
    err = capsys.readouterr().err
    assert "32 users were evaluated, fewer than select.min_users = 100" in err
    assert not out.exists()
    small = params_file(tmp_path, "select: {min_users: 30}\n")
    assert select.main([*argv, "--params", str(small)]) == 0
    assert json.loads((out / "selection.json").read_text())["winner"] == "ease"


# ---- evaluate, train, cold start on a shop without demographics -------------------------------


@pytest.fixture
def shop(tmp_path) -> tuple[Path, Path, Path, Path]:
    features, items, embeddings = write_features(tmp_path, shop_events(40, 30))
    dataset = load_dataset(features, items, embeddings)
    model = build_model("popularity", dataset.side.n_items)
    model.fit(train_data(dataset.sequences, dataset.side))
    model.save(tmp_path / "models" / "popularity")
    return features, items, embeddings, tmp_path / "models"


@pytest.mark.parametrize("mask", [True, False])
def test_evaluate_says_there_are_no_demographics_and_follows_the_protocol(
    tmp_path, shop, mask
) -> None:
    features, _, _, models = shop
    params = Params.model_validate({"evaluate": {"mask_history": mask}})
    evaluate.run(params, features=features, models=models, out=tmp_path / "eval")
    board = (tmp_path / "eval" / PROJECT.leaderboard_md.name).read_text()
    fairness = json.loads((tmp_path / "eval" / PROJECT.fairness.name).read_text())
    metrics = json.loads((tmp_path / "eval" / PROJECT.eval_metrics.name).read_text())
    assert "No demographics" in board
    # rhythm (behaviour clusters, evaluate.rhythm_clusters) needs timestamps only, no demographics
    assert set(fairness["popularity"]) == {"activity", "item_popularity", "target", "rhythm"}
    assert "unknown" not in json.dumps(fairness)
    repeats = fairness["popularity"]["target"]["segments"]["repeat (had it before)"]
    if mask:
        assert repeats["ndcg@10"] == 0.0, "a masked repeat target is a certain miss"
        assert "repeats@10" not in metrics["popularity"]["test"]
    else:
        assert "Repeats allowed (evaluate.mask_history: false)" in board
        assert 0 < metrics["popularity"]["test"]["repeats@10"] <= 1
        assert repeats["ndcg@10"] > 0, "popularity recommends what the user had"


def test_train_says_both_events_and_distinct_pairs(tmp_path, shop, caplog) -> None:
    features, items, embeddings, _ = shop
    params = Params.model_validate({"train": {"models": ["popularity"]}})
    sequences = pd.read_parquet(features / PROJECT.sequences.name)
    events = int(sequences[schema.SEQ_N_TRAIN].sum())
    with caplog.at_level(logging.INFO):
        train.run(
            params,
            features=features,
            items=items,
            embeddings=embeddings,
            tuned=tmp_path / "none.json",
            fitted=tmp_path / "none",
            checkpoints=tmp_path / "checkpoints",
            out=tmp_path / "trained",
        )
    pairs = train_data(*_dataset(features, items, embeddings)).matrix.nnz
    assert pairs < events, "the shop repeats purchases"
    assert f"training on {events} events ({pairs} distinct user-item pairs)" in caplog.text


def _dataset(features: Path, items: Path, embeddings: Path):
    dataset = load_dataset(features, items, embeddings)
    return dataset.sequences, dataset.side


def test_coldstart_prints_na_for_too_few_users_and_k0_without_profiles(tmp_path, shop) -> None:
    features, items, embeddings, models = shop
    params = Params.model_validate({"coldstart": {"models": ["ease"], "min_users": 5}})
    out = tmp_path / "coldstart"
    coldstart.run(
        params,
        features=features,
        items=items,
        embeddings=embeddings,
        tuned=tmp_path / "none.json",
        models=models,
        out=out,
    )
    metrics = json.loads((out / PROJECT.coldstart_metrics.name).read_text())
    shots = metrics["models"]["ease"]["new_users"]["shots"]
    assert metrics["new_users"] == 4  # 10% of 40, fewer than coldstart.min_users = 5
    assert all(cell["ndcg@10"] is None for cell in shots.values())
    assert "not_applicable" in shots["0"], "k = 0 without any profile"
    table = (out / PROJECT.coldstart_md.name).read_text()
    assert "0.0000" not in table.split("### New users")[1]
    assert "| ease | n/a | n/a | n/a | n/a | n/a |" in table
    assert "coldstart.min_users = 5" in table and "k=0 not applicable" in table


def test_a_cold_start_draw_with_nobody_in_it_is_refused(tmp_path, shop) -> None:
    features, items, embeddings, models = shop
    params = Params.model_validate({"coldstart": {"models": ["ease"], "user_share": 0.01}})
    with pytest.raises(ValueError, match=r"coldstart\.user_share = 0\.01 of 40 users draws none"):
        coldstart.run(
            params,
            features=features,
            items=items,
            embeddings=embeddings,
            tuned=tmp_path / "none.json",
            models=models,
            out=tmp_path / "coldstart",
        )


# ---- package: the served default follows the protocol ---------------------------------------


@pytest.mark.parametrize("mask", [True, False])
def test_the_model_card_carries_the_protocol_as_the_serving_default(
    tmp_path, monkeypatch, mask
) -> None:
    from pipelines.stages import package
    from tests.inference.tiny import FILMS, build_artifacts

    vectors = np.random.default_rng(0).normal(size=(len(FILMS), 384)).astype(np.float32)
    artifacts = build_artifacts(tmp_path, vectors, models=("popularity",))
    write_json(
        {"winner": "popularity", "valid": {}, "test": {}, "ranking": []},
        artifacts / "selection" / "selection.json",
    )
    no_champion = {"comparison": None, "why": "no champion yet: the floors alone decide"}
    write_json(no_champion, artifacts / "gate" / "gate.json")
    write_json({"weights": [0.1, 0.5, 0.9, 0.9]}, artifacts / "gate" / "blend.json")
    cards = []

    class Release:
        EVIDENCE_KEY, MODEL_NAME = "evidence", "recops"
        use_home = staticmethod(lambda home: None)
        champion = staticmethod(lambda: None)
        model_exists = staticmethod(lambda version: False)
        publish = staticmethod(lambda *a, **k: ("model:1", "bento:1"))

    monkeypatch.setattr(package, "release", Release)
    monkeypatch.setattr(package, "write_bundle", lambda *args: cards.append(args[-1]))
    params = Params.model_validate({"evaluate": {"mask_history": mask}})
    package.run(
        params,
        selection=artifacts / "selection" / "selection.json",
        metrics=artifacts / "eval" / "metrics.json",
        coldstart=artifacts / "coldstart" / "metrics.json",
        models=artifacts / "models",
        features=artifacts / "features",
        split=artifacts / "split",
        embeddings=artifacts / "embeddings" / "items.npy",
        data_dvc=tmp_path / "data.dvc",
        gate=artifacts / "gate" / "gate.json",
        blend=artifacts / "gate" / "blend.json",
        out=tmp_path / "release",
        bentoml_home=tmp_path / "home",
    )
    (card,) = cards
    assert card["serve"]["exclude_seen"] is mask
