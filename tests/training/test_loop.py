"""The shared gradient loop: batching, early stopping, best weights, resume, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
import scipy.sparse as sp
import torch

from pipelines.core.device import resolve_device
from pipelines.evaluation.ranking import evaluate_model
from pipelines.models.base import PAD, Histories, Recommender, TrainData, Validation
from pipelines.models.ease import EASE
from pipelines.models.sasrec import SASRec
from pipelines.training.loop import (
    CHECKPOINT,
    Sequences,
    TrainerConfig,
    WeightAverage,
    batches,
    epoch_windows,
    fit_gradient,
    load_checkpoint,
    lr_factor,
    seed_everything,
)

N_ITEMS = 20
TINY = {"hidden": 32, "heads": 2, "layers": 1, "ff_dim": 64, "dropout": 0.1, "max_len": 12}
FAST = TrainerConfig(epochs=8, batch_size=8, lr=1e-2, patience=100, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def successor_data(n_users: int = 30) -> tuple[TrainData, Histories, torch.Tensor]:
    """Item i is always followed by i + 1 (mod 20); the last event is the validation target."""
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(0, N_ITEMS, (n_users,), generator=generator).tolist()
    lengths = torch.randint(8, 16, (n_users,), generator=generator).tolist()
    sequences = [
        [(s + j) % N_ITEMS for j in range(n)] for s, n in zip(starts, lengths, strict=True)
    ]
    history = Histories.from_lists(
        [s[:-1] for s in sequences], [list(range(len(s) - 1)) for s in sequences]
    )
    matrix = sp.csr_matrix(history.to_matrix(N_ITEMS).numpy())
    targets = torch.tensor([s[-1] for s in sequences])
    return TrainData(matrix, history, N_ITEMS), history, targets


def tiny_sasrec(seed: int = 0) -> SASRec:
    seed_everything(seed)
    return SASRec(N_ITEMS, TINY)


class Drift(Recommender):
    """A model that gets worse with every step: its loss pushes a decoy above the target."""

    name = "drift"
    trainable = True
    context_length = 1
    TARGET, DECOY = 0, 1

    def __init__(self, n_items: int, config: dict | None = None) -> None:
        super().__init__(n_items, config)
        bias = torch.full((n_items,), -1.0)
        bias[self.TARGET], bias[self.DECOY] = 0.15, 0.0  # Adam moves the decoy 0.1 a step
        self.bias = torch.nn.Parameter(bias)

    def loss(self, batch: Histories) -> torch.Tensor:
        return -self.bias[self.DECOY]

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.bias[None, :].expand(histories.items.shape[0], -1)


# -- batching ------------------------------------------------------------------
def test_every_window_is_cropped_left_padded_and_seen_once() -> None:
    sequences = Sequences.from_histories(
        Histories.from_lists([[1, 2, 3, 4, 5, 6], [7, 8], [9]], [[0] * 6, [0] * 2, [0]])
    )
    assert len(sequences) == 2  # a one-event history has no target: left out
    config = TrainerConfig(batch_size=1, sort_pool=2, shuffle_ties=False)  # order as given
    generator = torch.Generator().manual_seed(0)
    found = [b.items.tolist() for b in batches(sequences, config, 4, generator)]
    assert sorted(found) == [
        [[3, 4, 5, 6]],
        [[7, 8]],
    ]  # newest window (max_len + 1) events, once each


def test_random_windows_are_full_and_earlier_than_the_newest() -> None:
    sequences = Sequences.from_histories(Histories.from_lists([list(range(10))], [[0] * 10]))
    windows = epoch_windows(sequences, window=4, random_windows=5, generator=torch.Generator())
    ends = sorted(end for _, end in windows)
    assert len(windows) == 6 and ends[-1] == 10  # the newest window, plus 5 random ones
    assert all(4 <= end < 10 for end in ends[:-1])


def test_batches_sort_lengths_within_a_pool() -> None:
    lengths = [2, 9, 3, 8, 4, 7, 5, 6]
    sequences = Sequences.from_histories(
        Histories.from_lists([list(range(n)) for n in lengths], [[0] * n for n in lengths])
    )
    config = TrainerConfig(batch_size=2, sort_pool=4)
    widths = sorted(b.items.shape[1] for b in batches(sequences, config, 21, torch.Generator()))
    assert widths == [3, 5, 7, 9]  # one pool: pairs of neighbouring lengths
    for batch in batches(sequences, config, 21, torch.Generator()):
        assert (batch.items[:, -1] != PAD).all()  # left padding: the newest event is last


# -- the loop ------------------------------------------------------------------
def test_sasrec_learns_and_best_weights_are_restored() -> None:
    train, valid, targets = successor_data()
    model = tiny_sasrec()
    result = fit_gradient(model, train, Validation(valid, targets), FAST)
    assert result.best_valid_ndcg > 0.95 and result.epochs == FAST.epochs
    assert result.best_valid_ndcg == max(ndcg for _, ndcg in result.history)
    assert result.sequences_per_second > 0 and result.device == "cpu"
    assert not model.training and next(model.parameters()).device.type == "cpu"
    metrics = evaluate_model(model, valid, targets, k=10, batch_size=16)
    assert metrics["ndcg@10"] == pytest.approx(result.best_valid_ndcg)


def test_early_stopping_after_patience_and_best_weights_restored() -> None:
    train, _, _ = successor_data()
    valid = Histories.from_lists([[5]] * 4, [[0]] * 4)  # target and decoy unseen
    targets = torch.full((4,), Drift.TARGET)
    model = Drift(N_ITEMS)
    snapshots: dict[int, torch.Tensor] = {}
    config = replace(FAST, epochs=50, batch_size=64, lr=0.1, patience=3)
    result = fit_gradient(
        model,
        train,
        Validation(valid, targets),
        config,
        report=lambda epoch, _: snapshots.__setitem__(epoch, model.bias.detach().clone()),
    )
    # one step per epoch: after epoch 1 the target still leads (NDCG 1), from epoch 2 the
    # decoy does; 3 evaluations without improvement later, it stops
    assert (result.best_epoch, result.epochs) == (1, 4)
    assert result.history[0][1] == 1.0
    assert result.history[-1][1] < 1.0  # the decoy overtook the target before it stopped
    assert torch.equal(model.bias.detach(), snapshots[1])  # best weights, not the last ones
    assert not torch.equal(snapshots[4], snapshots[1])


def test_same_seed_same_result() -> None:
    train, valid, targets = successor_data()
    config = replace(FAST, epochs=3)
    first = fit_gradient(tiny_sasrec(), train, Validation(valid, targets), config)
    second = fit_gradient(tiny_sasrec(), train, Validation(valid, targets), config)
    assert first.history == second.history


class Interrupted(Exception):
    """Stands in for a killed process."""


@pytest.mark.parametrize(
    "extra",
    [{}, {"schedule": "cosine", "warmup_epochs": 1.5, "ema_decay": 0.9, "shuffle_ties": True}],
    ids=["constant", "cosine-warmup-ema-ties"],
)
def test_resume_continues_and_ends_like_an_uninterrupted_run(tmp_path, extra) -> None:
    # the schedule is a function of the position and the average is checkpointed, so a
    # resumed run follows the uninterrupted one exactly with either turned on
    train, valid, targets = successor_data()
    config = replace(FAST, epochs=5, eval_every=1, random_windows=1, **extra)
    whole = fit_gradient(
        tiny_sasrec(), train, Validation(valid, targets), config, tmp_path / "whole"
    )

    def crash_at_epoch_3(epoch: int, _: float) -> None:
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit_gradient(
            tiny_sasrec(),
            train,
            Validation(valid, targets),
            config,
            tmp_path / "cut",
            report=crash_at_epoch_3,
        )
    assert load_checkpoint(tmp_path / "cut")["run"]["epoch"] == 3

    reported: list[int] = []
    model = tiny_sasrec(seed=123)  # fresh weights: the checkpoint must supply them
    resumed = fit_gradient(
        model,
        train,
        Validation(valid, targets),
        config,
        tmp_path / "cut",
        report=lambda epoch, _: reported.append(epoch),
    )
    assert reported == [4, 5]
    assert resumed.history == whole.history
    assert (resumed.best_epoch, resumed.epochs) == (whole.best_epoch, whole.epochs)
    last_whole = load_checkpoint(tmp_path / "whole")["state"]
    last_resumed = load_checkpoint(tmp_path / "cut")["state"]
    assert all(torch.equal(last_whole[key], last_resumed[key]) for key in last_whole)
    # a finished run called again returns at once, with the same result and weights
    again = fit_gradient(
        tiny_sasrec(seed=7), train, Validation(valid, targets), config, tmp_path / "cut"
    )
    assert again.history == whole.history and again.epochs == whole.epochs


def test_shuffled_ties_move_only_within_a_second() -> None:
    stamps = np.array([5, 5, 5, 9, 12, 12, 20])
    items = np.array([1, 2, 3, 4, 5, 6, 7])
    sequences = Sequences([items], [stamps], None)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        shuffled = sequences.with_ties_shuffled(generator)
        out = shuffled.items[0]
        assert np.array_equal(shuffled.timestamps[0], stamps)  # time features unchanged
        assert set(out[:3]) == {1, 2, 3} and out[3] == 4 and set(out[4:6]) == {5, 6}
        assert out[6] == 7
        seen.add(tuple(out))
    assert len(seen) > 6  # the ties really are reordered, epoch after epoch
    again = Sequences([items], [stamps], None).with_ties_shuffled(torch.Generator().manual_seed(0))
    first = sequences.with_ties_shuffled(torch.Generator().manual_seed(0))
    assert np.array_equal(again.items[0], first.items[0])  # the generator decides


def test_lr_factor_warms_up_linearly_then_decays_by_cosine() -> None:
    constant = replace(FAST, epochs=10)
    assert [lr_factor(p, constant) for p in (0, 3.5, 9.9)] == [1.0, 1.0, 1.0]
    warm = replace(FAST, epochs=10, warmup_epochs=2)
    assert lr_factor(0, warm) == 0.0 and lr_factor(1, warm) == 0.5 and lr_factor(2, warm) == 1.0
    assert lr_factor(7, warm) == 1.0  # constant after the warm-up
    cosine = replace(FAST, epochs=10, warmup_epochs=2, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(2, cosine) == pytest.approx(1.0)
    assert lr_factor(6, cosine) == pytest.approx(0.55)  # half-way: the mean of 1 and 0.1
    assert lr_factor(10, cosine) == pytest.approx(0.1)
    assert lr_factor(12, cosine) == pytest.approx(0.1)  # past the budget: the floor
    falls = [lr_factor(p, cosine) for p in (2, 4, 6, 8, 10)]
    assert falls == sorted(falls, reverse=True) and len(set(falls)) == 5


def test_schedule_reaches_the_optimizer() -> None:
    train, valid, targets = successor_data()
    config = replace(FAST, epochs=2, lr=0.01, schedule="cosine", min_lr_ratio=0.25)
    model = tiny_sasrec()
    seen: list[float] = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", spy)
        fit_gradient(model, train, Validation(valid, targets), config)
    assert seen[0] == pytest.approx(0.01) and seen[-1] < 0.01 * 0.4
    assert seen == sorted(seen, reverse=True)


def test_weight_average_follows_the_weights_and_swaps_back() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(4.0)
    average.update(model)  # 0.5 * 0 + 0.5 * 4
    average.update(model)  # 0.5 * 2 + 0.5 * 4
    with average.swapped_in(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 3.0))
    assert torch.allclose(model.weight, torch.full((1, 2), 4.0))  # the raw weights are back


def test_with_an_average_the_returned_model_is_the_averaged_one() -> None:
    train, valid, targets = successor_data()
    plain = tiny_sasrec()
    averaged = tiny_sasrec()
    fit_gradient(plain, train, Validation(valid, targets), replace(FAST, epochs=3))
    fit_gradient(
        averaged, train, Validation(valid, targets), replace(FAST, epochs=3, ema_decay=0.9)
    )
    differ = [
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), averaged.state_dict().values(), strict=True)
        if a.is_floating_point()
    ]
    assert any(differ)


def test_checkpoint_of_another_run_is_not_resumed(tmp_path) -> None:
    train, valid, targets = successor_data()
    config = replace(FAST, epochs=2)
    fit_gradient(tiny_sasrec(), train, Validation(valid, targets), config, tmp_path)
    assert (tmp_path / CHECKPOINT).exists()
    # a finished run is not handed back for new training events (a retrain) ...
    retrain, _, _ = successor_data(n_users=29)
    epochs: list[int] = []
    record = lambda epoch, _: epochs.append(epoch)  # noqa: E731
    fit_gradient(
        tiny_sasrec(), retrain, Validation(valid, targets), config, tmp_path, report=record
    )
    # ... nor for another architecture: both train from epoch 1
    other = SASRec(N_ITEMS, {**TINY, "hidden": 16})
    fit_gradient(other, train, Validation(valid, targets), config, tmp_path, report=record)
    assert epochs == [1, 2, 1, 2]


def test_pruning_propagates() -> None:
    train, valid, targets = successor_data()

    def prune(epoch: int, ndcg: float) -> None:
        raise optuna.TrialPruned(f"epoch {epoch}: {ndcg}")

    with pytest.raises(optuna.TrialPruned):
        fit_gradient(tiny_sasrec(), train, Validation(valid, targets), FAST, report=prune)


def test_refuses_closed_form_models_and_missing_cuda() -> None:
    train, valid, targets = successor_data()
    with pytest.raises(ValueError, match="closed form"):
        fit_gradient(EASE(N_ITEMS), train, Validation(valid, targets), FAST)
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


def test_deterministic_mode_is_restored() -> None:
    train, valid, targets = successor_data()
    before = torch.are_deterministic_algorithms_enabled()
    fit_gradient(tiny_sasrec(), train, Validation(valid, targets), replace(FAST, epochs=1))
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.gpu
def test_trains_on_cuda_with_bf16() -> None:
    train, valid, targets = successor_data()
    config = replace(FAST, device="cuda", amp=True)
    result = fit_gradient(tiny_sasrec(), train, Validation(valid, targets), config)
    assert result.device == "cuda" and result.best_valid_ndcg > 0.9
