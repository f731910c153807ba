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


def test_config_bounds_and_every_layer_norm_uses_its_eps() -> None:
    assert SASRecConfig(max_len=1).max_len == 1
    with pytest.raises(ValueError, match=r"^max_len must be at least 1$"):
        SASRecConfig(max_len=0)
    model = tiny_model(layer_norm_eps=1e-3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * TINY["layers"] + 1 and {m.eps for m in norms} == {1e-3}
    with pytest.raises(ValueError, match=r"^sequence length 17 exceeds max_len 16$"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_weights_start_small_and_centred_with_zero_biases() -> None:
    model = tiny_model(init_std=0.02)
    weights = model.item_emb.weight[1:]
    assert abs(weights.mean().item()) < 0.005 and weights.std().item() == pytest.approx(
        0.02, rel=0.2
    )
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_attention_mask_known_answer() -> None:
    valid = torch.tensor([[False, True, True]])  # one padding slot, two events
    allowed = attention_mask(valid)[0, 0]
    # padding attends only to itself; each event to itself and the events before it
    assert allowed.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_the_newest_state_reads_the_whole_history() -> None:
    model = tiny_model().eval()
    items = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = items.clone()
    changed[0, 0] = 17  # the oldest event
    with torch.no_grad():
        assert not torch.allclose(model(items)[:, -1], model(changed)[:, -1])


def test_input_is_item_plus_position_embedding() -> None:
    # with no blocks, the model is LayerNorm(item + position embedding) at real events
    model = tiny_model(layers=0).eval()
    items = torch.tensor([[PAD, 3, 7]])
    with torch.no_grad():
        positions = model.pos_emb(torch.tensor([2, 1, 0]))  # newest = 0
        expected = (
            model.ln_out(model.item_emb(items + 1) + positions[None]) * (items != PAD)[..., None]
        )
        assert torch.allclose(model(items), expected, atol=1e-6)


def test_blocks_are_pre_layer_norm_residuals() -> None:
    model = tiny_model().eval()
    block, x = model.blocks[0], torch.randn(2, 4, TINY["hidden"])
    allowed = attention_mask(torch.ones(2, 4, dtype=torch.bool))
    with torch.no_grad():
        h = x + block.attn(block.ln_attn(x), allowed)
        assert torch.allclose(block(x, allowed), h + block.ff(block.ln_ff(h)), atol=1e-6)
        ff, a, b = block.ff, torch.randn(3, TINY["hidden"]), torch.randn(3, TINY["hidden"])
        assert not torch.allclose(ff(a + b), ff(a) + ff(b) - ff(torch.zeros_like(a)), atol=1e-4)


def test_every_dropout_acts_in_training_only() -> None:
    items = torch.tensor([[1, 2, 3, 4, 5, 6]])
    for site in ("embedding", "attention", "residual", "feed-forward"):
        model = tiny_model(dropout=0.5)
        model.emb_dropout.p = 0.5 if site == "embedding" else 0.0
        for block in model.blocks:  # every site off but the one under test
            block.attn.dropout = 0.5 if site == "attention" else 0.0
            block.attn.resid_dropout.p = 0.5 if site == "residual" else 0.0
            block.ff.net[3].p = 0.5 if site == "feed-forward" else 0.0
        with torch.no_grad():
            model.train()
            assert not torch.allclose(model(items), model(items)), site
            model.eval()
            assert torch.equal(model(items), model(items)), site


def test_loss_is_next_item_cross_entropy_over_the_newest_max_len_events() -> None:
    model = tiny_model(max_len=4, dropout=0.0).eval()
    batch = as_histories([[9, 8, 1, 2, 3, 4, 5], [6, 7]])
    with torch.no_grad():
        items = batch.items[:, -5:]  # max_len + 1 newest slots
        inputs, targets = items[:, :-1], items[:, 1:]
        keep = inputs != PAD
        logits = model.logits(model(inputs)[keep])
        expected = torch.nn.functional.cross_entropy(logits, targets[keep])
        assert model.loss(batch).item() == pytest.approx(expected.item(), rel=1e-6)
        assert keep.sum().item() == 4 + 1


def test_scores_of_short_and_empty_histories() -> None:
    model = tiny_model().eval()
    one = as_histories([[3]])
    with torch.no_grad():
        assert torch.allclose(model.score_all(one), model.logits(model(one.items)[:, -1]))
    assert model.score_all(one).abs().sum() > 0  # one event is a history, not an empty one
    empty = Histories(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long))
    assert torch.equal(model.score_all(empty), torch.zeros(3, N_ITEMS))


def test_scores_stay_on_the_device_of_the_model() -> None:
    # the meta device checks placement without a GPU: a CPU tensor mixed in fails
    model = tiny_model().eval().to("meta")
    batch = as_histories([[1, 2, 3], [4]]).to("meta")
    assert model.score_all(batch).device.type == "meta"
    empty = Histories(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long))
    assert model.score_all(empty.to("meta")).device.type == "meta"


def test_scoring_creates_no_tensor_on_the_default_device() -> None:
    # with the default device set to meta, a tensor made without an explicit device lands
    # on meta and fails against the CPU model
    model = tiny_model().eval()
    batch = as_histories([[1, 2, 3], [4]])
    with torch.no_grad():
        reference = model.score_all(batch)
        with torch.device("meta"):
            assert torch.allclose(model.score_all(batch), reference)
