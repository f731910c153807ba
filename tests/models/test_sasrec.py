"""SASRec: shapes, masks, learning a known pattern, and persistence."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.evaluation.ranking import evaluate_model
from pipelines.models import MODELS, load_model
from pipelines.models.base import PAD, Histories
from pipelines.models.sasrec import SASRec, SASRecConfig, attention_mask

N_ITEMS = 20
TINY = {"hidden": 32, "heads": 2, "layers": 2, "ff_dim": 64, "dropout": 0.1, "max_len": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def successor_sequences(n_users: int = 30, seed: int = 0) -> list[list[int]]:
    """Item i is always followed by item i + 1 (mod 20); 8-15 events, no repeats."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, N_ITEMS, (n_users,), generator=generator).tolist()
    lengths = torch.randint(8, 16, (n_users,), generator=generator).tolist()
    return [[(s + j) % N_ITEMS for j in range(n)] for s, n in zip(starts, lengths, strict=True)]


def as_histories(sequences: list[list[int]], max_len: int | None = None) -> Histories:
    return Histories.from_lists(
        sequences, [list(range(len(s))) for s in sequences], max_len=max_len
    )


def tiny_model(seed: int = 0, **overrides: object) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(N_ITEMS, {**TINY, **overrides})


def test_shapes() -> None:
    model = tiny_model().eval()
    batch = as_histories(successor_sequences(4))
    assert model(batch.items).shape == (4, batch.items.shape[1], TINY["hidden"])  # [B, L, D]
    assert model.score_all(batch).shape == (4, N_ITEMS)
    assert model.score(batch, torch.tensor([[0, 5], [1, 2], [3, 3], [19, 0]])).shape == (4, 2)
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_padding_is_never_attended_nor_predicted() -> None:
    model = tiny_model().eval()
    short = as_histories([[3, 4, 5], [7, 8, 9, 10, 11]])  # width 5, first row padded
    wider = Histories(
        torch.cat([torch.full((2, 4), PAD), short.items], dim=1),
        torch.cat([torch.zeros(2, 4, dtype=torch.long), short.timestamps], dim=1),
    )
    with torch.no_grad():
        hidden = model(short.items)
        # extra padding on the left changes neither the scores nor the loss
        assert torch.allclose(model.score_all(short), model.score_all(wider), atol=1e-6)
        assert torch.allclose(model.loss(short), model.loss(wider), atol=1e-6)
    assert hidden[0, :2].abs().sum() == 0  # padding slots carry no state
    assert model.item_emb.weight[0].abs().sum() == 0  # the padding row is all zeros
    allowed = attention_mask(short.mask)[0, 0]  # user 0: [L, L]
    assert not allowed[2:, :2].any()  # real events never look at padding


def test_padding_row_gets_no_gradient() -> None:
    model = tiny_model()
    model.loss(as_histories(successor_sequences(6))).backward()
    assert model.item_emb.weight.grad[0].abs().sum() == 0


def test_attention_is_causal() -> None:
    model = tiny_model().eval()
    items = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = items.clone()
    changed[0, 4] = 17  # a future event for positions 0..3
    with torch.no_grad():
        before, after = model(items), model(changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_empty_history_scores_are_finite() -> None:
    model = tiny_model().eval()
    scores = model.score_all(Histories.from_lists([[], [1, 2]], [[], [1, 2]]))
    assert torch.isfinite(scores).all()


def test_score_all_uses_only_the_last_max_len_events() -> None:
    model = tiny_model(max_len=4).eval()
    long = as_histories([[9, 8, 1, 2, 3, 4]])
    recent = as_histories([[1, 2, 3, 4]])
    assert torch.allclose(model.score_all(long), model.score_all(recent))


def test_learns_the_successor_pattern() -> None:
    model = tiny_model(dropout=0.0)
    sequences = successor_sequences()
    train = as_histories(sequences)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(train)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    # without masking the history: the true next item must be the top score
    histories = as_histories([s[:-1] for s in sequences])
    targets = torch.tensor([s[-1] for s in sequences])
    assert (model.score_all(histories).argmax(dim=1) == targets).all()
    metrics = evaluate_model(model, histories, targets, k=10, batch_size=8)
    assert metrics["ndcg@10"] > 0.99


def test_save_and_rebuild_from_model_json(tmp_path, monkeypatch) -> None:
    model = tiny_model().eval()
    batch = as_histories(successor_sequences(5))
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["name"] == "sasrec"
    assert meta["config"] == {**SASRecConfig().__dict__, **TINY}  # every field, JSON-able
    rebuilt = SASRec(meta["n_items"], meta["config"])
    rebuilt.load_state(tmp_path)
    rebuilt.eval()
    assert torch.equal(model.score_all(batch), rebuilt.score_all(batch))
    # and through the registry, as the evaluate stage and the service load it
    monkeypatch.setitem(MODELS, "sasrec", SASRec)
    assert torch.equal(model.score_all(batch), load_model(tmp_path).score_all(batch))


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="hiden"):
        SASRec(N_ITEMS, {"hiden": 32})  # a typo is an error, not a silent default
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden=30, heads=4)


@pytest.mark.gpu
def test_trains_under_bf16_autocast_on_cuda() -> None:
    model = tiny_model().cuda()
    batch = as_histories(successor_sequences()).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.score_all(batch).shape == (30, N_ITEMS)
