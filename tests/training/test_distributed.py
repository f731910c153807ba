"""Training on two processes (DDP, gloo on CPU) against one, on a small noisy fixture.

The fixture: item i is followed by i + 1 most of the time, by i + 2 or a random item
otherwise; each user's last event is the validation target. A tiny SASRec learns it to
well above popularity; the 2-process fit takes every other batch per rank (gradients
averaged: an effective batch twice the size) and must reach the 1-process validation
NDCG@10 within noise (the paired per-user interval of the difference holds 0, or is a
gain), come back as a model that saves, loads and scores the same, and repeat exactly
(seeds per rank and epoch). A resumed 2-process run ends like an uninterrupted one (slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipelines.evaluation.ranking import evaluate_per_user
from pipelines.evaluation.stats import paired_difference
from pipelines.models import load_model
from pipelines.models.base import Histories, TrainData, Validation
from pipelines.models.sasrec import SASRec
from pipelines.training import distributed
from pipelines.training.loop import TrainerConfig, fit_gradient, load_checkpoint, seed_everything

N_ITEMS, N_USERS = 40, 240
TINY = {"hidden": 32, "heads": 2, "layers": 1, "ff_dim": 64, "dropout": 0.1, "max_len": 12}
CONFIG = TrainerConfig(
    epochs=10, batch_size=16, lr=5e-3, patience=3, device="cpu", eval_batch_size=512, seed=3
)

pytestmark = pytest.mark.usefixtures("one_thread")


def noisy_successors(seed: int = 0) -> tuple[TrainData, Validation]:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(N_USERS):
        item, sequence = int(rng.integers(N_ITEMS)), []
        for _ in range(int(rng.integers(8, 18))):
            sequence.append(item)
            step = rng.choice([1, 2, 0], p=[0.7, 0.15, 0.15])
            item = int(rng.integers(N_ITEMS)) if step == 0 else (item + step) % N_ITEMS
        sequences.append(sequence)
    history = Histories.from_lists(
        [s[:-1] for s in sequences], [list(range(len(s) - 1)) for s in sequences]
    )
    matrix = sp.csr_matrix(history.to_matrix(N_ITEMS).numpy())
    targets = torch.tensor([s[-1] for s in sequences])
    return TrainData(matrix, history, N_ITEMS), Validation(history, targets)


def tiny_sasrec() -> SASRec:
    seed_everything(CONFIG.seed)  # as fit_model seeds the initial weights
    return SASRec(N_ITEMS, TINY)


def per_user_ndcg(model, valid: Validation) -> np.ndarray:
    _, ndcg = evaluate_per_user(model, valid.histories, valid.targets, k=10, batch_size=512)
    return ndcg.numpy()


@pytest.fixture(scope="module")
def fits():
    """One fit per process count; each process on one thread (a module fixture runs before
    `one_thread`: spinning OpenMP threads on a busy machine crawl)."""
    train, valid = noisy_successors()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for processes in (1, 2):
            model = tiny_sasrec()
            started = time.perf_counter()
            result = fit_gradient(model, train, valid, replace(CONFIG, processes=processes))
            out[processes] = (model, result, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return train, valid, out


def test_two_processes_reach_the_one_process_ndcg_within_noise(fits):
    _, valid, out = fits
    (one, one_result, one_s), (two, two_result, two_s) = out[1], out[2]
    a, b = per_user_ndcg(two, valid), per_user_ndcg(one, valid)
    popularity = per_user_ndcg_popularity(fits[0], valid)
    difference = paired_difference(a, b)
    print(
        f"valid NDCG@10: 1 process {b.mean():.4f} (epoch {one_result.best_epoch}, {one_s:.1f} s), "
        f"2 processes {a.mean():.4f} (epoch {two_result.best_epoch}, {two_s:.1f} s); "
        f"2 - 1 = {difference.mean:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]; "
        f"popularity {popularity:.4f}"
    )
    assert min(a.mean(), b.mean()) > 2 * popularity  # both learned the successor rule
    assert difference.high >= 0  # not worse beyond noise
    assert two_result.device == "cpu" and two_result.epochs <= CONFIG.epochs
    # the restored weights are the best evaluation's, as on one process
    assert two_result.best_valid_ndcg == pytest.approx(float(a.mean()), abs=1e-6)
    assert two_result.best_valid_ndcg == max(n for _, n in two_result.history)


def per_user_ndcg_popularity(train: TrainData, valid: Validation) -> float:
    from pipelines.models import build_model

    model = build_model("popularity", N_ITEMS)
    model.fit(train)
    return float(per_user_ndcg(model, valid).mean())


def test_the_two_process_model_saves_loads_and_scores_the_same(fits, tmp_path):
    _, valid, out = fits
    model = out[2][0]
    assert not model.training and next(model.parameters()).device.type == "cpu"
    model.save(tmp_path / "sasrec")
    loaded = load_model(tmp_path / "sasrec")
    with torch.no_grad():
        assert torch.equal(model.score_all(valid.histories), loaded.score_all(valid.histories))


@pytest.mark.slow
def test_two_process_runs_repeat_exactly(fits):
    train, valid, out = fits
    again = tiny_sasrec()
    result = fit_gradient(again, train, valid, replace(CONFIG, processes=2))
    assert result.history == out[2][1].history
    first = out[2][0].state_dict()
    assert all(torch.equal(first[key], value) for key, value in again.state_dict().items())


@pytest.mark.slow
def test_a_rank_that_fails_fails_the_fit_with_one_clear_line(monkeypatch):
    train, valid = noisy_successors()
    # the job lands under another name than the ranks (new processes) read: they fail
    monkeypatch.setattr(distributed, "JOB", "elsewhere.pt")
    with pytest.raises(RuntimeError, match=r"training on 2 processes failed \(torchrun exit"):
        fit_gradient(tiny_sasrec(), train, valid, replace(CONFIG, processes=2, epochs=1))


def test_processes_must_be_at_least_one():
    with pytest.raises(ValueError, match="processes must be at least 1"):
        TrainerConfig(processes=0)


def test_a_group_shards_batches_evenly_and_one_process_takes_them_all():
    batches = list(range(7))
    shares = [distributed.Group(rank, 2).shard(batches) for rank in (0, 1)]
    assert shares == [[0, 2, 4, 6], [1, 3, 5, 0]]  # the same number of steps: wraps round
    assert distributed.SINGLE.shard(batches) == batches
    assert distributed.SINGLE.agree(0.25) == 0.25


RESUMABLE = """
import sys
from dataclasses import replace
from pathlib import Path
from tests.training.test_distributed import CONFIG, noisy_successors, tiny_sasrec
from pipelines.training.loop import fit_gradient
train, valid = noisy_successors()
fit_gradient(tiny_sasrec(), train, valid, replace(CONFIG, processes=2, patience=100,
             epochs=6), Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    train, valid = noisy_successors()
    config = replace(CONFIG, processes=2, patience=100, epochs=6)
    whole = fit_gradient(tiny_sasrec(), train, valid, config, tmp_path / "whole")
    # the killed parent cannot remove its launch folder: keep it under tmp_path
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(distributed.ROOT), "TMPDIR": str(tmp_path / "tmp")}
    run = subprocess.Popen(
        [sys.executable, "-c", RESUMABLE, str(tmp_path / "cut")],
        env=env,
        cwd=distributed.ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        checkpoint = load_checkpoint(tmp_path / "cut") if (tmp_path / "cut").exists() else None
        if checkpoint and checkpoint["run"]["epoch"] >= 2:
            os.killpg(run.pid, signal.SIGKILL)  # the parent and both ranks
            break
        time.sleep(0.2)
    run.wait(timeout=30)
    cut_at = load_checkpoint(tmp_path / "cut")["run"]["epoch"]
    assert 2 <= cut_at < config.epochs, "the run ended before it could be killed"
    resumed = fit_gradient(tiny_sasrec(), train, valid, config, tmp_path / "cut")
    assert resumed.history == whole.history
    print(json.dumps({"killed after epoch": cut_at, "history": resumed.history}))
