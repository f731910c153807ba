"""FusionTransformer: contract, masks, cold start, ablations, learning, persistence, LoRA."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipelines.models.base import (
    PAD,
    Histories,
    Recommender,
    TrainData,
    Validation,
    config_from_dict,
)
from pipelines.models.fusion_transformer import (
    FusionConfig,
    FusionTransformer,
    context_layout,
    day_of_week,
    gap_buckets,
    hour_of_day,
    keep_newest,
    log_buckets,
    pair_buckets,
)

PROFILE_SIZES = [4, 3, 8, 5]  # age band, gender, occupation, region; 0 = unknown
SMALL = {"hidden": 16, "n_heads": 2, "n_layers": 1, "max_len": 12, "profile_sizes": PROFILE_SIZES}


@pytest.fixture(autouse=True)
def _seeded(one_thread: None) -> None:
    torch.manual_seed(0)


def unit_vectors(n_items: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Random unit vectors standing in for MiniLM item embeddings, [n_items, dim]."""
    vectors = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def train_data(
    sequences: list[list[int]],
    n_items: int,
    profiles: list[list[int]] | None = None,
    embeddings: np.ndarray | None = None,
    texts: tuple[str, ...] | None = None,
) -> TrainData:
    """TrainData of the given sequences; timestamps one hour apart."""
    stamps = [[1_000_000 + 3_600 * t for t in range(len(seq))] for seq in sequences]
    rows = [user for user, seq in enumerate(sequences) for _ in seq]
    cols = [item for seq in sequences for item in seq]
    matrix = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(sequences), n_items)
    )
    matrix.data[:] = 1.0
    return TrainData(
        matrix=matrix,
        histories=Histories.from_lists(sequences, stamps, profiles),
        n_items=n_items,
        item_embeddings=unit_vectors(n_items) if embeddings is None else embeddings,
        item_texts=texts,
        profile_sizes=tuple(PROFILE_SIZES),
    )


def fitted(n_items: int, sequences: list[list[int]], **config: object) -> FusionTransformer:
    model = FusionTransformer(n_items, {**SMALL, **config})
    model.fit(train_data(sequences, n_items, profiles=[[1, 1, 1, 1]] * len(sequences)))
    return model


def history(items: list[int], profile: list[int] | None = None) -> Histories:
    stamps = [1_000_000 + 3_600 * t for t in range(len(items))]
    return Histories.from_lists([items], [stamps], None if profile is None else [profile])


def train_steps(model: Recommender, batch: Histories, steps: int, lr: float = 1e-2) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()


# -- pure helpers ------------------------------------------------------------------------
def test_time_helpers_known_values() -> None:
    # 1997-09-20 (ML-100K's first day) was a Saturday; 1998-04-22 12:34 UTC a Wednesday
    stamps = torch.tensor([874_724_710, 893_248_440, 0])
    assert day_of_week(stamps).tolist() == [5, 2, 3]  # Monday = 0; 1970-01-01 a Thursday
    assert hour_of_day(torch.tensor([0, 3_599, 3_600, 86_399])).tolist() == [0, 0, 1, 23]
    assert log_buckets(torch.tensor([0, 1, 3, 3_600, 10**12]), 32).tolist() == [0, 1, 2, 11, 31]


def test_context_token_sits_before_the_first_event() -> None:
    items = torch.tensor([[PAD, PAD, 5, 6], [1, 2, 3, 4], [PAD, PAD, PAD, PAD]])
    tokens, is_context = context_layout(items)
    assert tokens[0].tolist() == [PAD, PAD, PAD, 5, 6]
    assert is_context.int().argmax(dim=1).tolist() == [2, 0, 4]
    assert is_context.sum(dim=1).tolist() == [1, 1, 1]
    stamps = torch.tensor([[0, 0, 0, 10, 10 + 3_600]])
    gaps = gap_buckets(tokens[:1], stamps, 32)
    assert gaps[0, 3:].tolist() == [32, 11]  # first event: "no previous event"


def test_left_padding_is_required() -> None:
    with pytest.raises(ValueError, match="left-padded"):
        context_layout(torch.tensor([[1, 2, PAD]]))


def test_config_rejects_unknown_keys_and_empty_items() -> None:
    with pytest.raises(ValueError, match="hiden"):
        config_from_dict(FusionConfig, {"hiden": 32})
    with pytest.raises(ValueError, match="use_text or use_id"):
        config_from_dict(FusionConfig, {"use_text": False, "use_id": False})


def test_fit_refuses_profile_sizes_missing_from_the_config() -> None:
    model = FusionTransformer(6, {"hidden": 16, "profile_sizes": [2, 2, 2, 2]})
    with pytest.raises(ValueError, match="profile_sizes"):
        model.fit(train_data([[0, 1, 2]], 6))


# -- contract and masks ------------------------------------------------------------------
def test_shapes_of_loss_and_scores() -> None:
    model = fitted(7, [[0, 1, 2, 3], [4, 5]])
    batch = Histories.from_lists([[0, 1, 2], [3], []], [[1, 2, 3], [4], []], [[1, 2, 3, 4]] * 3)
    loss = model.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    model.eval()
    assert model.score_all(batch).shape == (3, 7)
    assert model.score(batch, torch.tensor([[0, 6]] * 3)).shape == (3, 2)


def test_future_events_do_not_change_earlier_outputs() -> None:
    model = fitted(8, [[0, 1, 2, 3, 4]]).eval()
    vectors = model.item_representations()
    base = history([0, 1, 2, 3], [1, 1, 1, 1])
    changed = Histories(
        torch.tensor([[0, 1, 2, 7]]),
        base.timestamps + torch.tensor([[0, 0, 0, 99_999]]),
        base.profiles,
    )
    before, after = model.encode(base, vectors), model.encode(changed, vectors)
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_padding_does_not_change_scores() -> None:
    model = fitted(8, [[0, 1, 2, 3, 4]]).eval()
    alone = model.score_all(history([1, 2, 3], [1, 2, 3, 4]))
    stamps = [[1_000_000 + 3_600 * t for t in range(3)], list(range(7))]
    batch = Histories.from_lists([[1, 2, 3], [0, 1, 2, 3, 4, 5, 6]], stamps, [[1, 2, 3, 4]] * 2)
    assert torch.allclose(model.score_all(batch)[0], alone[0], atol=1e-5)


def test_long_histories_keep_the_newest_events() -> None:
    model = fitted(8, [[0, 1, 2, 3, 4]], max_len=4).eval()
    long = history([5, 6, 0, 1, 2, 3, 4], [1, 1, 1, 1])
    short = Histories(long.items[:, -4:], long.timestamps[:, -4:], long.profiles)
    assert torch.allclose(model.score_all(long), model.score_all(short))
    assert torch.isfinite(model.loss(long))


def test_empty_history_is_scored_from_the_profile() -> None:
    model = fitted(8, [[0, 1, 2, 3]]).eval()
    empty = Histories.from_lists([[], []], [[], []], [[1, 1, 1, 1], [3, 2, 7, 4]])
    scores = model.score_all(empty)
    assert torch.isfinite(scores).all()
    assert not torch.allclose(scores[0], scores[1])
    blind = fitted(8, [[0, 1, 2, 3]], use_profile=False).eval()
    scores = blind.score_all(empty)
    assert torch.allclose(scores[0], scores[1])  # without profiles, nothing tells them apart


def test_unknown_or_missing_profile_codes_are_served() -> None:
    model = fitted(8, [[0, 1, 2, 3]]).eval()
    unknown = history([1, 2], [0, 0, 0, 0])
    assert torch.allclose(
        model.score_all(history([1, 2], [0, 99, -5, 0])), model.score_all(unknown)
    )
    # a code equal to the table size is one past its end: unknown too
    assert torch.allclose(model.score_all(history([1, 2], PROFILE_SIZES)), model.score_all(unknown))
    assert torch.allclose(model.score_all(history([1, 2])), model.score_all(unknown))


# -- cold items --------------------------------------------------------------------------
def test_cold_items_are_scored_from_their_text() -> None:
    n_items = 8
    embeddings = unit_vectors(n_items)
    embeddings[7] = embeddings[6]  # items 6 and 7: same text, no training events
    model = FusionTransformer(n_items, SMALL)
    data = train_data([[0, 1, 2, 3], [4, 5, 0]], n_items, embeddings=embeddings)
    model.fit(data)
    assert model.items.has_id.tolist() == [True] * 6 + [False] * 2
    train_steps(model, data.histories, steps=3)
    scores = model.score_all(history([0, 1], [1, 1, 1, 1]))[0]
    assert scores[6] == scores[7] and scores[6] != 0.0

    embeddings[7] = unit_vectors(1, seed=5)[0]  # a different text gives a different score
    model.fit(train_data([[0, 1, 2, 3], [4, 5, 0]], n_items, embeddings=embeddings))
    assert model.score_all(history([0, 1], [1, 1, 1, 1]))[0, 7] != scores[7]


def test_id_dropout_only_in_training() -> None:
    # the adaptor's own dropout is off, so only the id mask can make two calls differ
    model = fitted(400, [list(range(400))], id_dropout=0.5, adaptor_dropout=0.0)
    first, second = model.items(), model.items()
    assert not torch.equal(first, second)  # a fresh id mask each step
    text = model.items.adaptor(model.items.text())
    dropped = (first - text).abs().sum(dim=1) == 0  # items whose id embedding was zeroed
    assert 0.4 < dropped.float().mean().item() < 0.6  # about id_dropout of them
    model.eval()
    assert torch.equal(model.items(), model.items())
    # without text there is nothing to stand in for a dropped id: no id dropout
    blind = fitted(40, [list(range(40))], id_dropout=0.5, use_text=False)
    assert torch.equal(blind.items(), blind.items()) and blind.items().abs().sum() > 0


# -- ablations ---------------------------------------------------------------------------
SWITCHES = ("use_text", "use_id", "use_time", "use_profile")


@pytest.mark.parametrize(
    "flags", [f for f in itertools.product([True, False], repeat=4) if f[0] or f[1]]
)
def test_every_ablation_builds_trains_and_scores(flags: tuple[bool, ...]) -> None:
    model = fitted(8, [[0, 1, 2, 3], [4, 5, 6]], **dict(zip(SWITCHES, flags, strict=True)))
    batch = Histories.from_lists(
        [[0, 1, 2, 3], [4, 5, 6]], [[1, 2, 3, 4], [5, 6, 7]], [[1, 2, 3, 4]] * 2
    )
    before = model.loss(batch).item()
    train_steps(model, batch, steps=1)
    scores = model.score_all(batch)
    assert scores.shape == (2, 8) and torch.isfinite(scores).all()
    assert np.isfinite(before)


# -- learning ----------------------------------------------------------------------------
def test_learns_successors_and_profile_starts() -> None:
    """Item i is followed by i + 1; the occupation code decides the first item."""
    n_items, users = 12, 48
    rng = np.random.default_rng(0)
    occupations = rng.integers(1, 8, size=users)  # codes 1..7
    sequences = [
        [(2 * int(o) + t) % n_items for t in range(int(rng.integers(3, 9)))] for o in occupations
    ]
    profiles = [[1, 1, int(o), 1] for o in occupations]
    model = FusionTransformer(n_items, {**SMALL, "hidden": 32, "dropout": 0.0, "id_dropout": 0.0})
    data = train_data(sequences, n_items, profiles)
    model.fit(data)
    train_steps(model, data.histories, steps=150, lr=1e-2)

    with torch.no_grad():
        starts = model.score_all(
            Histories.from_lists([[]] * 7, [[]] * 7, [[1, 1, o, 1] for o in range(1, 8)])
        )
        assert starts.argmax(dim=1).tolist() == [(2 * o) % n_items for o in range(1, 8)]
        prefixes = [[i, (i + 1) % n_items] for i in range(n_items)]
        stamps = [[1_000_000, 1_003_600]] * n_items
        nexts = model.score_all(Histories.from_lists(prefixes, stamps, [[1, 1, 1, 1]] * n_items))
    hits = nexts.argmax(dim=1) == torch.tensor([(i + 2) % n_items for i in range(n_items)])
    assert hits.float().mean() >= 0.9


def test_shared_trainer_fits_it() -> None:
    from pipelines.training import loop as trainer

    n_items = 10
    sequences = [[(s + t) % n_items for t in range(6)] for s in range(20)]
    data = train_data(sequences, n_items, [[1, 1, 1, 1]] * 20)
    model = FusionTransformer(n_items, SMALL)
    model.fit(data)
    valid = Histories.from_lists(sequences, [list(range(6))] * 20, [[1, 1, 1, 1]] * 20)
    targets = torch.tensor([(s + 6) % n_items for s in range(20)])
    config = trainer.TrainerConfig(epochs=3, batch_size=8, device="cpu", patience=3)
    result = trainer.fit_gradient(model, data, Validation(valid, targets), config)
    assert result.epochs == 3 and 0.0 <= result.best_valid_ndcg <= 1.0
    assert not model.training


# -- persistence -------------------------------------------------------------------------
def rebuild(directory: Path) -> FusionTransformer:
    """What the registry's load_model does: config from model.json, then the state."""
    meta = json.loads((directory / "model.json").read_text())
    assert meta["name"] == "fusion_transformer"
    model = FusionTransformer(meta["n_items"], meta["config"])
    model.load_state(directory)
    return model.eval()


def test_save_and_rebuild_give_identical_scores(tmp_path: Path) -> None:
    model = fitted(8, [[0, 1, 2, 3], [4, 5]])
    batch = Histories.from_lists(
        [[0, 1, 2], [4, 5], []], [[1, 2, 3], [4, 5], []], [[1, 2, 3, 4]] * 3
    )
    train_steps(model, batch, steps=2)
    model.save(tmp_path)
    assert (
        json.loads((tmp_path / "model.json").read_text())["config"]["profile_sizes"]
        == PROFILE_SIZES
    )
    assert torch.equal(rebuild(tmp_path).score_all(batch), model.score_all(batch))


# -- LoRA: MiniLM fine-tuned inside the model (the GPU path, a few steps on CPU) ---------
TEXTS = (
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
    "Four Rooms (1995). Genres: Thriller.",
    "Get Shorty (1995). Genres: Action, Comedy, Drama.",
    "Copycat (1995). Genres: Crime, Drama, Thriller.",
    "Twelve Monkeys (1995). Genres: Drama, Sci-Fi.",
    "Babe (1995). Genres: Children's, Comedy, Drama.",
    "Dead Man Walking (1995). Genres: Drama.",
    "Richard III (1995). Genres: Drama, War.",
    "Seven (1995). Genres: Crime, Thriller.",
    "Usual Suspects, The (1995). Genres: Crime, Thriller.",
    "Mighty Aphrodite (1995). Genres: Comedy.",
)


def test_lora_mode_trains_only_adapters_and_round_trips(tmp_path: Path) -> None:
    n_items = len(TEXTS)
    sequences = [[(s + t) % n_items for t in range(5)] for s in range(8)]
    model = FusionTransformer(n_items, {**SMALL, "text_encoder": "lora", "text_max_length": 24})
    data = train_data(sequences, n_items, [[1, 1, 1, 1]] * 8, texts=TEXTS)
    model.fit(data)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, data.histories, steps=3, lr=1e-2)

    encoder = "items.text.encoder."
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    lora = {name for name in before if name.startswith(encoder) and "lora_" in name}
    base = {name for name in before if name.startswith(encoder) and "lora_" not in name}
    assert lora and lora <= changed  # B starts at zero, so A moves from step 2 on
    assert not base & changed  # MiniLM's own weights stay frozen
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in base)
    assert any(name.startswith("items.adaptor.") for name in changed)

    batch = Histories.from_lists([[0, 1, 2], []], [[1, 2, 3], []], [[1, 2, 3, 4]] * 2)
    model.eval()
    model.save(tmp_path)
    rebuilt = rebuild(tmp_path)
    assert torch.equal(rebuilt.items.text.token_ids, model.items.text.token_ids)
    assert torch.allclose(rebuilt.score_all(batch), model.score_all(batch), atol=1e-5)


# -- switches that must matter -------------------------------------------------------------
N_SWITCH_ITEMS = 8
SWITCH_SEQUENCES = [[0, 1, 2, 3, 4], [4, 5, 6, 7], [2, 3, 5]]


def trained_with(**switches: bool) -> FusionTransformer:
    torch.manual_seed(0)
    model = fitted(N_SWITCH_ITEMS, SWITCH_SEQUENCES, **switches)
    batch = Histories.from_lists(
        SWITCH_SEQUENCES,
        [[1_000_000 + 5_000 * t * t for t in range(len(s))] for s in SWITCH_SEQUENCES],
        [[1, 2, 3, 4]] * 3,
    )
    train_steps(model, batch, steps=3)
    return model


def fixed_input(stamp_step: int = 3_600, profile: tuple[int, ...] = (1, 1, 1, 1)) -> Histories:
    items = [[0, 1, 2], [4, 5]]
    stamps = [[1_000_000 + stamp_step * t * (t + 1) for t in range(len(s))] for s in items]
    return Histories.from_lists(items, stamps, [list(profile)] * 2)


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.allclose(a, b, atol=1e-6)


def test_time_changes_the_scores_only_when_on() -> None:
    on, off = trained_with(), trained_with(use_time=False)
    slow, fast = fixed_input(stamp_step=60), fixed_input(stamp_step=86_400 * 30)
    assert differs(on.score_all(slow), on.score_all(fast))  # the encodings enter the input
    assert torch.equal(off.score_all(slow), off.score_all(fast))
    names = {name.split(".")[0] for name, _ in off.named_parameters()}
    assert not names & {"gap", "hour", "weekday", "time_bias"}  # off: no such parameters


def test_profile_changes_the_scores_only_when_on() -> None:
    on, off = trained_with(), trained_with(use_profile=False)
    a, b = fixed_input(profile=(1, 1, 1, 1)), fixed_input(profile=(2, 2, 5, 3))
    assert differs(on.score_all(a), on.score_all(b))
    assert torch.equal(off.score_all(a), off.score_all(b))
    assert not [name for name, _ in off.named_parameters() if name.startswith("profile")]


def test_text_changes_the_scores_only_when_on() -> None:
    on, off = trained_with(), trained_with(use_text=False)
    batch = fixed_input()
    for model, expect_change in ((on, True), (off, False)):
        before = model.score_all(batch)
        other = train_data(SWITCH_SEQUENCES, N_SWITCH_ITEMS, [[1, 1, 1, 1]] * 3)
        other = type(other)(**{**other.__dict__, "item_embeddings": unit_vectors(8, seed=9)})
        model.fit(other)  # new text vectors, same weights
        assert differs(before, model.score_all(batch)) == expect_change
    assert off.items.adaptor is None and off.items.text is None


def test_id_embeddings_change_the_scores_only_when_on() -> None:
    on, off = trained_with(), trained_with(use_id=False)
    batch = fixed_input()
    before = on.score_all(batch)
    with torch.no_grad():
        on.items.ids.weight.add_(0.5)
    on.eval()
    assert differs(before, on.score_all(batch))
    assert off.items.ids is None


def test_every_whitening_expert_is_used() -> None:
    model = trained_with()
    batch = fixed_input()
    before = model.score_all(batch)
    gates = torch.softmax(model.items.adaptor.gate(model.items.text()), dim=-1)  # [n_items, K]
    assert (gates.mean(dim=0) > 0.01).all()  # no expert is switched off by the gate
    for expert in range(model.cfg.n_experts):
        saved = model.items.adaptor.experts.data[expert].clone()
        with torch.no_grad():
            model.items.adaptor.experts.data[expert].zero_()
        model.eval()
        assert differs(before, model.score_all(batch)), expert
        with torch.no_grad():
            model.items.adaptor.experts.data[expert] = saved
        model.eval()


def test_there_is_no_user_id_embedding() -> None:
    model = trained_with()
    names = [name for name, _ in [*model.named_parameters(), *model.named_buffers()]]
    assert not [name for name in names if "user" in name]
    # every table is sized by items, time buckets, hours, weekdays, positions or profile codes
    tables = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    sizes = {name: table.num_embeddings for name, table in tables}
    assert sizes == {
        "items.ids": N_SWITCH_ITEMS,
        **{f"profile.{field}": size for field, size in enumerate(PROFILE_SIZES)},
        "position": SMALL["max_len"] + 1,
        "gap": 33,
        "hour": 24,
        "weekday": 7,
        "time_bias": 33,
    }


WEEK = 7 * 86_400


def moved(batch: Histories, seconds: int = 0, weeks_apart: int = 0) -> Histories:
    """The same events ``seconds`` later, each gap ``weeks_apart`` weeks longer."""
    real = batch.items != PAD
    order = real.long().cumsum(dim=1)  # 1, 2, ... over the real events
    stamps = batch.timestamps + seconds + order * weeks_apart * WEEK
    return Histories(batch.items, torch.where(real, stamps, 0), batch.profiles)


def test_each_time_encoding_enters_the_input() -> None:
    # hour of day, day of week, the gap embedding and the time bias each move the scores;
    # whole weeks later, every hour, weekday and gap is the same, and so are the scores
    model = trained_with()
    batch = fixed_input()
    before = model.score_all(batch)
    assert torch.allclose(before, model.score_all(moved(batch, 3 * WEEK)), atol=1e-6)
    assert differs(before, model.score_all(moved(batch, 3_600)))  # the hour only
    assert differs(before, model.score_all(moved(batch, 86_400)))  # the weekday only
    apart = moved(batch, weeks_apart=1)  # longer gaps, same hours and weekdays
    assert torch.equal(hour_of_day(apart.timestamps), hour_of_day(batch.timestamps))
    assert torch.equal(day_of_week(apart.timestamps), day_of_week(batch.timestamps))
    for table in ("time_bias", "gap"):  # with either one silenced, the other still sees gaps
        other = trained_with()
        with torch.no_grad():
            getattr(other, table).weight.zero_()
        other.eval()
        assert differs(other.score_all(batch), other.score_all(apart)), table


def test_text_vectors_must_match_the_config_and_take_its_dtype() -> None:
    model = FusionTransformer(8, SMALL)
    message = (
        r"^item embeddings \(8, 10\) do not match \[n_items, text_dim\] = \(8, 384\); "
        r"set text_dim in the config$"
    )
    with pytest.raises(ValueError, match=message):
        model.items.text.set_vectors(torch.zeros(8, 10))
    model.items.text.set_vectors(torch.ones(8, 384, dtype=torch.float64))
    assert model.items.text.vectors.dtype == torch.float32


def test_data_config_reads_profile_sizes_and_text_width() -> None:
    data = train_data([[0, 1, 2]], 6, embeddings=unit_vectors(6, dim=12))
    assert FusionTransformer.data_config(data) == {
        "profile_sizes": tuple(PROFILE_SIZES),
        "text_dim": 12,
    }
    bare = TrainData(data.matrix, data.histories, n_items=6)
    assert FusionTransformer.data_config(bare) == {"profile_sizes": ()}


def test_moving_or_casting_the_model_drops_its_cached_item_vectors() -> None:
    model = fitted(8, [[0, 1, 2, 3]]).eval()
    batch = history([0, 1], [1, 1, 1, 1])
    with torch.no_grad():
        model.score_all(batch)  # fills the eval-mode cache
        model.to(torch.float64)
        scores = model.score_all(Histories(batch.items, batch.timestamps, batch.profiles))
    assert scores.dtype == torch.float64
    # _apply passes its arguments on: recurse=False leaves the submodules alone
    before = model.items.ids.weight.clone()
    model._apply(lambda t: t * 0, recurse=False)
    assert torch.equal(model.items.ids.weight, before) and model.context.abs().sum() == 0


# -- wiring on known answers ---------------------------------------------------------------
def test_config_bounds_and_messages() -> None:
    assert FusionConfig(max_len=1, text_encoder="lora").text_encoder == "lora"
    cases = {
        "hidden 30 must be a multiple of n_heads 4": {"hidden": 30, "n_heads": 4},
        "text_encoder must be 'frozen' or 'lora', got 'bert'": {"text_encoder": "bert"},
        "an item needs a representation: use_text or use_id must be true": {
            "use_text": False,
            "use_id": False,
        },
        "max_len must be at least 1": {"max_len": 0},
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            FusionConfig(**bad)
    with pytest.raises(ValueError, match=r"^histories must be left-padded: PAD slots before"):
        context_layout(torch.tensor([[PAD, 1, PAD]]))  # a gap after the first event


def test_fit_refuses_data_it_cannot_use() -> None:
    model = FusionTransformer(8, SMALL)
    with pytest.raises(ValueError, match=r"^train data has 6 items, the model 8$"):
        model.fit(train_data([[0, 1]], 6))
    bare = train_data([[0, 1]], 8)
    bare = TrainData(bare.matrix, bare.histories, 8, profile_sizes=tuple(PROFILE_SIZES))
    with pytest.raises(
        ValueError, match=r"^fusion_transformer needs the item embeddings of the embed stage$"
    ):
        model.fit(bare)


def test_lora_mode_builds_the_lora_encoder_and_hands_it_the_texts(monkeypatch) -> None:
    # a stand-in for LoraText, so no MiniLM is loaded: only the wiring is checked here
    from pipelines.models import fusion_transformer as module

    built, texts = [], []

    class Recorder(module.LoraText):
        def __init__(self, n_items: int, cfg: FusionConfig) -> None:
            torch.nn.Module.__init__(self)
            built.append((n_items, cfg.text_encoder))

        def set_texts(self, given) -> None:
            texts.append(given)

        def forward(self) -> torch.Tensor:
            return torch.zeros(8, 384)

    monkeypatch.setattr(module, "LoraText", Recorder)
    model = FusionTransformer(8, {**SMALL, "text_encoder": "lora"})
    assert built == [(8, "lora")] and isinstance(model.items.text, Recorder)
    data = train_data([[0, 1, 2]], 8, texts=tuple(f"text {i}" for i in range(8)))
    model.fit(data)
    assert texts == [data.item_texts]
    with pytest.raises(ValueError, match=r"^text_encoder 'lora' needs TrainData.item_texts$"):
        model.fit(train_data([[0, 1, 2]], 8))


def test_the_first_blocks_input_is_the_sum_of_its_parts(monkeypatch) -> None:
    model = trained_with().eval()
    batch = fixed_input(profile=(1, 2, 5, 3))
    seen: list[torch.Tensor] = []
    block = model.blocks[0]
    original = block.forward
    monkeypatch.setattr(block, "forward", lambda x, bias: seen.append(x) or original(x, bias))
    with torch.no_grad():
        model.score_all(batch)
        vectors = model.item_representations()
        tokens, is_context = context_layout(batch.items)
        stamps = torch.cat([torch.zeros(2, 1, dtype=torch.long), batch.timestamps], dim=1)
        real = tokens != PAD
        context = model.context + sum(
            table(batch.profiles[:, field]) for field, table in enumerate(model.profile)
        )
        x = (
            vectors[tokens.clamp(min=0)] * real[..., None]
            + context[:, None] * is_context[..., None]
        )
        x = x + model.position(torch.arange(tokens.shape[1] - 1, -1, -1))[None]
        time = model.gap(gap_buckets(tokens, stamps, 32))
        time = time + model.hour(hour_of_day(stamps)) + model.weekday(day_of_week(stamps))
        x = model.input_norm(x + time * real[..., None])
    assert torch.allclose(seen[0], x, atol=1e-5)


def test_blocks_get_the_mask_plus_their_own_time_bias(monkeypatch) -> None:
    model = trained_with(n_layers=2).eval()
    with torch.no_grad():
        model.time_bias.weight.normal_()  # a bias far from zero, different per layer and head
    batch = fixed_input()
    biases: list[torch.Tensor] = []
    for block in model.blocks:
        original = block.forward
        monkeypatch.setattr(
            block, "forward", lambda x, bias, f=original: biases.append(bias) or f(x, bias)
        )
    with torch.no_grad():
        model.score_all(batch)
        tokens, is_context = context_layout(batch.items)
        stamps = torch.cat([torch.zeros(2, 1, dtype=torch.long), batch.timestamps], dim=1)
        pairs = model.time_bias(pair_buckets(tokens, stamps, 32)).permute(0, 3, 1, 2)
    length = tokens.shape[1]
    allowed = (
        torch.ones(length, length, dtype=torch.bool).tril()
        & ((tokens != PAD) | is_context)[:, None, :]
    )
    allowed = allowed | torch.eye(length, dtype=torch.bool)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]
    for layer, bias in enumerate(biases):
        assert torch.equal(bias, mask + pairs[:, 2 * layer : 2 * layer + 2]), layer


def test_transformer_blocks_are_pre_layer_norm_residuals() -> None:
    model = trained_with().eval()
    block, x = model.blocks[0], torch.randn(2, 4, SMALL["hidden"])
    bias = torch.zeros(2, 1, 4, 4)
    with torch.no_grad():
        h = x + block.attention(block.norm1(x), bias)
        assert torch.allclose(block(x, bias), h + block.mlp(block.norm2(h)), atol=1e-6)
        a, b = torch.randn(3, SMALL["hidden"]), torch.randn(3, SMALL["hidden"])
        zero = torch.zeros_like(a)
        assert not torch.allclose(
            block.mlp(a + b), block.mlp(a) + block.mlp(b) - block.mlp(zero), atol=1e-4
        )


def test_whitening_experts_are_mixed_by_the_gate() -> None:
    model = trained_with()
    adaptor = model.items.adaptor.eval()
    k, dim = adaptor.experts.shape[:2]
    # the gate starts as an even mixture: no bias, zero weights
    fresh = FusionTransformer(8, SMALL).items.adaptor
    assert torch.allclose(
        torch.softmax(fresh.gate(torch.randn(5, dim)), -1), torch.full((5, k), 1 / k)
    )
    assert fresh.experts.std().item() == pytest.approx(1 / math.sqrt(dim), rel=0.05)
    with torch.no_grad():
        adaptor.bias.copy_(torch.randn(k, dim))  # one bias per expert
        text = torch.randn(3, dim)
        weights = torch.softmax(adaptor.gate(text), dim=-1)  # [3, K]
        expected = sum(
            weights[:, e, None] * ((text - adaptor.bias[e]) @ adaptor.experts[e]) for e in range(k)
        )
        assert torch.allclose(adaptor(text), expected, atol=1e-5)


def test_id_embeddings_start_small_and_every_item_has_one_until_fit() -> None:
    model = FusionTransformer(200, SMALL)
    assert model.items.ids.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert model.items.has_id.dtype == torch.bool and model.items.has_id.all()


def test_attention_dropout_acts_in_training_only() -> None:
    model = fitted(8, [[0, 1, 2, 3]], dropout=0.5, adaptor_dropout=0.0, id_dropout=0.0)
    model.input_dropout.p = 0.0
    for block in model.blocks:  # only the attention weights' dropout stays on
        block.dropout.p = 0.0
    batch = history([0, 1, 2], [1, 1, 1, 1])
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model.score_all(batch), model.score_all(batch))
        model.eval()
        assert torch.equal(model.score_all(batch), model.score_all(batch))
    assert model.train() is model and model.training  # train() means train(True)


def test_the_cache_never_serves_stale_item_vectors() -> None:
    model = trained_with().eval()
    batch = fixed_input()
    with torch.no_grad():
        first = model.score_all(batch)  # cached from here on
        other = train_data(SWITCH_SEQUENCES, N_SWITCH_ITEMS, [[1, 1, 1, 1]] * 3)
        model.fit(TrainData(**{**other.__dict__, "item_embeddings": unit_vectors(8, seed=3)}))
        refitted = model.score_all(batch)
        assert differs(first, refitted)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model.items.ids.weight.add_(1.0)
        model.load_state_dict(state)
        assert torch.allclose(model.score_all(batch), refitted)
    # with gradients on, even an eval-mode model recomputes: a weight changed in between counts
    before = model.score_all(batch)
    with torch.no_grad():
        model.items.ids.weight.add_(1.0)
    assert differs(before, model.score_all(batch))
    missing = {k: v for k, v in state.items() if not k.startswith("items.ids")}
    model.load_state_dict(missing, strict=False)  # keyword arguments are passed on


def test_bf16_autocast_scores_on_cpu() -> None:
    # under autocast the attention runs in bf16: the time bias must follow its dtype
    model = trained_with().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score_all(fixed_input())
    assert scores.dtype == torch.bfloat16 and torch.isfinite(scores).all()


def test_loss_is_next_item_cross_entropy_over_the_newest_window() -> None:
    model = fitted(8, [[0, 1, 2, 3]], max_len=3, dropout=0.0, adaptor_dropout=0.0, id_dropout=0.0)
    model.eval()
    long = history([5, 6, 0, 1, 2, 3, 4], [1, 2, 3, 4])
    with torch.no_grad():
        window = keep_newest(long, 4)  # max_len inputs + the last target
        inputs = Histories(window.items[:, :-1], window.timestamps[:, :-1], window.profiles)
        vectors = model.item_representations()
        logits = model.encode(inputs, vectors)[0] @ vectors.T  # [4, n_items]
        expected = torch.nn.functional.cross_entropy(logits, window.items[0])
        assert model.loss(long).item() == pytest.approx(expected.item(), rel=1e-5)


def test_scoring_creates_no_tensor_on_the_default_device() -> None:
    # with the default device set to meta, a tensor made without an explicit device
    # lands on meta and fails against the CPU model: every one must follow the model
    model = trained_with().eval()
    batch = fixed_input()
    with torch.no_grad():
        reference = model.score_all(batch)
        with torch.device("meta"):
            assert torch.allclose(model.score_all(batch), reference)
    model.train()
    with torch.device("meta"):
        assert model.loss(batch).device.type == "cpu"


@pytest.mark.gpu
def test_a_cuda_model_takes_cpu_inputs_and_trains_under_bf16_autocast() -> None:
    # the model moves histories, profiles and targets to its own device, and the attention
    # bias follows the bf16 queries under autocast (CUDA refuses a float32 mask there)
    model = FusionTransformer(N_SWITCH_ITEMS, SMALL).cuda()
    data = train_data(SWITCH_SEQUENCES, N_SWITCH_ITEMS, [[1, 2, 3, 4]] * 3)
    model.fit(data)  # the id mask lands on the model's device
    batch = fixed_input()  # on the CPU
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(batch)
    loss.backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        scores = model.score_all(batch)
    assert torch.isfinite(loss) and scores.shape == (2, N_SWITCH_ITEMS) and scores.is_cuda
