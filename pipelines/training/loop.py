"""The gradient training loop shared by every trainable model.

A model only has to keep the contract (design.md §7): ``loss(Histories)`` for
training and ``score_all`` for the validation ranking. The loop:

1. seeds torch, numpy and random, and makes CPU kernels deterministic;
2. each epoch shuffles the users' training sequences into mini-batches, each
   sequence cropped to its newest ``context_length + 1`` events, the model's
   window (``random_windows`` adds earlier windows of long histories);
3. every ``eval_every`` epochs ranks the full catalogue for the validation
   targets (``evaluate_model``), keeps the best weights by NDCG@k, writes an
   atomic checkpoint, then calls ``report(epoch, ndcg)`` (an Optuna pruner
   raises ``optuna.TrialPruned`` there; it propagates);
4. stops after ``patience`` evaluations without improvement and restores the
   best weights.

Called again with the same ``checkpoint_dir``, an interrupted run resumes
after its last evaluation and ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from pipelines.core.device import resolve_device
from pipelines.core.io import write_torch
from pipelines.evaluation.ranking import evaluate_model
from pipelines.models.base import PAD, Histories, Recommender, TrainData, Validation
from pipelines.training.distributed import SINGLE, Group, launch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 60  # upper bound; early stopping ends ML-100K runs far sooner
    batch_size: int = 128  # sequences per step
    lr: float = 1e-3  # AdamW; the usual SASRec rate
    weight_decay: float = 0.0  # on weight matrices and embeddings only; dropout regularises
    patience: int = 5  # evaluations without a better valid NDCG@k before stopping
    # the cutoff of the validation NDCG that early stopping (and tuning) watches: the
    # protocol's evaluate.k, filled by training.fit.resolve, never set in a train section
    k: int = 10
    eval_every: int = 1  # epochs between evaluations (ML-100K: 1-4 s each on 2 CPU cores)
    # extra random earlier windows per history longer than a window; 1 lifted SASRec's
    # ML-100K valid NDCG@10 from 0.093 to 0.107 (one seed), for 15% more sequences per epoch
    random_windows: int = 0
    sort_pool: int = 4  # batches per length-sorted pool (less padding); 1 = plain shuffling
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when present
    amp: bool = True  # bf16 autocast on CUDA; CPU always trains in fp32
    seed: int = 42
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_batch_size: int = 256  # users scored at once during validation
    # learning rate over the run: constant, or a linear warm-up then a cosine decay to
    # ``lr * min_lr_ratio`` at ``epochs`` (a fixed budget; early stopping may end it sooner)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    min_lr_ratio: float = 0.0  # the cosine floor, as a share of ``lr``
    # exponential moving average of the weights, updated every step; validation, early
    # stopping and the returned model use the average (0 = off, the raw weights)
    ema_decay: float = 0.0
    # reorder events that share a timestamp at random each epoch: their order in the data
    # is the source file's, which carries no preference (MovieLens ships in random order)
    # (flagship, 3 seeds: 0.1170 ± 0.0053 -> 0.1189 ± 0.0007 test NDCG@10)
    shuffle_ties: bool = True
    # training processes (DDP under torchrun: gloo on CPU, NCCL on CUDA, one GPU each); each
    # takes every n-th batch, so a step sees n x batch_size sequences (training/distributed.py)
    processes: int = 1
    # validation masks the history (the protocol's evaluate.mask_history, which
    # training.fit.resolve sets here: early stopping judges as evaluate does)
    mask_history: bool = True

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size", "patience", "eval_every", "sort_pool", "k", "processes")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.random_windows < 0 or self.grad_clip < 0 or self.lr < 0:
            raise ValueError("random_windows, grad_clip and lr must not be negative")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError("warmup_epochs must be at least 0 and below epochs")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be between 0 and 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be at least 0 and below 1")


@dataclass(frozen=True)
class TrainResult:
    best_valid_ndcg: float  # valid NDCG@k of the restored weights (k: TrainerConfig.k)
    best_epoch: int  # 1-based epoch that reached it
    epochs: int  # epochs run in total, resumed ones included
    device: str
    history: tuple[tuple[int, float], ...]  # (epoch, valid NDCG@k) of every evaluation
    # how long it took: logged, never written to an output (0 for a result read back), so
    # that the same fit gives the same files and dvc.lock on every run; not part of equality
    seconds: float = field(default=0.0, compare=False)  # in all, evaluations and resumes included
    sequences_per_second: float = field(default=0.0, compare=False)  # evaluations excluded

    def record(self) -> dict[str, Any]:
        """JSON-ready, without the run-dependent timings."""
        timings = ("seconds", "sequences_per_second")
        return {k: v for k, v in asdict(self).items() if k not in timings}


# -- setup ---------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA). Call before building a model too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weight matrices and embeddings, never biases or LayerNorm gains (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_factor(progress: float, config: TrainerConfig) -> float:
    """Share of ``config.lr`` at ``progress`` epochs into the run (0 = the first step).

    A pure function of the position, so a resumed run follows the same curve
    without storing a scheduler: warm-up rises linearly from 0 to 1 over
    ``warmup_epochs``; ``cosine`` then falls to ``min_lr_ratio`` at ``epochs``.
    """
    if config.warmup_epochs and progress < config.warmup_epochs:
        return progress / config.warmup_epochs
    if config.schedule == "constant":
        return 1.0
    span = config.epochs - config.warmup_epochs
    done = min(max(progress - config.warmup_epochs, 0.0) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))


# -- batches -------------------------------------------------------------------
@dataclass(frozen=True)
class Sequences:
    """Unpadded training sequences, oldest event first; only users with >= 2 events."""

    items: list[np.ndarray]
    timestamps: list[np.ndarray]
    profiles: torch.Tensor | None  # [n, 4] or None

    @classmethod
    def from_histories(cls, histories: Histories) -> Sequences:
        mask = histories.mask.numpy()
        items, stamps = histories.items.numpy(), histories.timestamps.numpy()
        rows = [row for row in range(len(mask)) if mask[row].sum() >= 2]
        profiles = None if histories.profiles is None else histories.profiles[rows]
        return cls(
            [items[row][mask[row]] for row in rows],
            [stamps[row][mask[row]] for row in rows],
            profiles,
        )

    def __len__(self) -> int:
        return len(self.items)

    def with_ties_shuffled(self, generator: torch.Generator) -> Sequences:
        """The same sequences with each run of equal timestamps in a random order."""
        items = []
        for row, stamps in enumerate(self.timestamps):
            keys = torch.rand(len(stamps), generator=generator).numpy()
            order = np.lexsort((keys, stamps))  # by time, then at random within a second
            items.append(self.items[row][order])
        return Sequences(items, self.timestamps, self.profiles)


def epoch_windows(
    sequences: Sequences, window: int, random_windows: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """(sequence, end) of every window this epoch, shuffled; a window is ``[end - window, end)``.

    Every sequence gives its newest window; one longer than ``window`` also
    gives ``random_windows`` windows ending at random earlier events.
    """
    windows = [(row, len(items)) for row, items in enumerate(sequences.items)]
    for row, items in enumerate(sequences.items):
        if random_windows and len(items) > window:
            # ends in [window, len - 1]: a full window strictly earlier than the newest
            ends = torch.randint(window, len(items), (random_windows,), generator=generator)
            windows.extend((row, int(end)) for end in ends)
    order = torch.randperm(len(windows), generator=generator).tolist()
    return [windows[i] for i in order]


def make_batch(sequences: Sequences, windows: list[tuple[int, int]], window: int) -> Histories:
    """Left-pad the chosen windows to the longest of them, ``[B, <= window]``."""
    crops = [(row, max(0, end - window), end) for row, end in windows]
    width = max(end - start for _, start, end in crops)
    items = np.full((len(crops), width), PAD, dtype=np.int64)
    stamps = np.zeros((len(crops), width), dtype=np.int64)
    for i, (row, start, end) in enumerate(crops):
        items[i, width - (end - start) :] = sequences.items[row][start:end]
        stamps[i, width - (end - start) :] = sequences.timestamps[row][start:end]
    profiles = None
    if sequences.profiles is not None:
        profiles = sequences.profiles[[row for row, _ in windows]]
    return Histories(torch.from_numpy(items), torch.from_numpy(stamps), profiles)


def batches(
    sequences: Sequences, config: TrainerConfig, window: int, generator: torch.Generator
) -> list[Histories]:
    """This epoch's mini-batches, in random order.

    Shuffled windows are cut into pools of ``sort_pool`` batches and sorted by
    length within each pool, so a batch pads to similar lengths (less wasted
    attention) while its members still change from epoch to epoch.
    """
    if config.shuffle_ties:
        sequences = sequences.with_ties_shuffled(generator)
    windows = epoch_windows(sequences, window, config.random_windows, generator)
    pool = config.batch_size * config.sort_pool
    chosen: list[list[tuple[int, int]]] = []
    for start in range(0, len(windows), pool):
        ordered = sorted(windows[start : start + pool], key=lambda w: min(w[1], window))
        chosen += [
            ordered[i : i + config.batch_size] for i in range(0, len(ordered), config.batch_size)
        ]
    order = torch.randperm(len(chosen), generator=generator).tolist()
    return [make_batch(sequences, chosen[i], window) for i in order]


# -- weight averaging ----------------------------------------------------------
class WeightAverage:
    """An exponential moving average of a model's floating-point weights.

    ``update`` after each optimizer step; ``swapped_in`` puts the average into the
    model for evaluation and restores the raw weights afterwards, so training
    continues from where the optimizer left it.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value.detach(), 1 - self.decay)
            else:  # counters, masks: the current value
                self.state[key].copy_(value)

    @contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(raw)


# -- checkpoints ---------------------------------------------------------------
def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream the loop touches, as tensors and plain values (no pickles)."""
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
        "batches": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    generator.set_state(state["batches"])


def save_checkpoint(state: dict[str, Any], directory: Path) -> None:
    """Atomic: a crash never leaves half a checkpoint."""
    write_torch(state, directory / CHECKPOINT)


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    path = directory / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def data_digest(train: TrainData, valid: Validation | None) -> str:
    """Digest of everything a fit learns from: events, profiles, item vectors, validation."""
    digest = hashlib.sha256(str(train.n_items).encode())
    arrays = [
        train.matrix.indptr,
        train.matrix.indices,
        train.histories.items,
        train.histories.timestamps,
        train.histories.profiles,
        train.item_embeddings,
    ]
    if valid is not None:
        arrays += [valid.histories.items, valid.histories.timestamps, valid.histories.profiles]
        arrays.append(valid.targets)
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        values = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def run_fingerprint(
    model: Recommender,
    config: TrainerConfig,
    train: TrainData,
    valid: Validation,
) -> str:
    """Digest of everything that decides the run: model, trainer config (bar device), data."""
    meta = {
        "model": model.name,
        "n_items": model.n_items,
        "config": model.config,
        "trainer": {k: v for k, v in asdict(config).items() if k != "device"},
        "data": data_digest(train, valid),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


# -- the loop ------------------------------------------------------------------
@dataclass
class RunState:
    """What the loop carries from one evaluation to the next (and across a resume)."""

    epoch: int = 0  # epochs completed
    best_ndcg: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # evaluations since the best one
    history: list[tuple[int, float]] = field(default_factory=list)
    sequences: int = 0  # training sequences seen
    train_seconds: float = 0.0  # time spent in training steps
    seconds: float = 0.0  # wall time of earlier calls (resumed runs)
    stopped: bool = False  # early stopping fired


def train_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    sequences: Sequences,
    config: TrainerConfig,
    generator: torch.Generator,
    device: torch.device,
    epoch: int,
    average: WeightAverage | None = None,
    ranks: Group = SINGLE,
) -> tuple[float, int]:
    """One pass over the shuffled windows; returns (mean loss, sequences seen)."""
    model.train()
    window = model.context_length + 1  # context_length inputs and each one's next item
    autocast = device.type == "cuda" and config.amp
    total_loss, steps, seen = 0.0, 0, 0
    epoch_batches = ranks.shard(batches(sequences, config, window, generator))
    progress = tqdm(epoch_batches, desc=f"epoch {epoch}", leave=False, disable=None)
    for step, batch in enumerate(progress):
        factor = lr_factor(epoch - 1 + step / len(epoch_batches), config)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = ranks.loss(model)(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if average is not None:
            average.update(model)
        total_loss, steps, seen = total_loss + loss.item(), steps + 1, seen + len(batch.items)
        progress.set_postfix(loss=f"{total_loss / steps:.4f}")
    return total_loss / steps, seen * ranks.world


def fit_gradient(
    model: Recommender,
    train: TrainData,
    valid: Validation,
    config: TrainerConfig,
    checkpoint_dir: Path | None = None,
    report: Callable[[int, float], None] | None = None,
    ranks: Group = SINGLE,
) -> TrainResult:
    """Train ``model`` by its ``loss``; it comes back on the CPU, in eval mode, best weights."""
    if not model.trainable:
        raise ValueError(f"{model.name} is fitted in closed form; call model.fit instead")
    if model.context_length is None:
        raise ValueError(f"{model.name} trains on windows but has no context_length")
    if config.processes > 1 and ranks.world == 1:
        return launch(model, train, valid, config, checkpoint_dir, report)  # torchrun ranks
    device = resolve_device(config.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu" or deterministic)
    try:
        return _fit(model, train, valid, config, device, checkpoint_dir, report, ranks)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fit(
    model: Recommender,
    train: TrainData,
    validation: Validation,
    config: TrainerConfig,
    device: torch.device,
    checkpoint_dir: Path | None,
    report: Callable[[int, float], None] | None,
    ranks: Group = SINGLE,
) -> TrainResult:
    started = time.perf_counter()
    metric = f"ndcg@{config.k}"
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and windows
    sequences = Sequences.from_histories(train.histories)
    if not len(sequences):
        raise ValueError("no training sequence has two events: nothing to learn from")
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    valid = validation.histories.to(device), validation.targets.to(device)
    run, best_state = RunState(), cpu_state(model)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None

    fingerprint = run_fingerprint(model, config, train, validation)
    checkpoint = None if checkpoint_dir is None else load_checkpoint(checkpoint_dir)
    if checkpoint is not None and checkpoint["fingerprint"] != fingerprint:
        # another model, config or data (a retrain on new events): never resume it
        log.warning("ignoring the checkpoint in %s: it is from a different run", checkpoint_dir)
        checkpoint = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"], generator)
        run, best_state = RunState(**checkpoint["run"]), checkpoint["best_state"]
        if average is not None:
            average.state = {k: v.to(device) for k, v in checkpoint["average"].items()}
        run.history = [(int(e), float(n)) for e, n in run.history]
        log.info("resumed from %s after epoch %d", checkpoint_dir, run.epoch)

    while not run.stopped and run.epoch < config.epochs:
        run.epoch += 1
        epoch_started = time.perf_counter()
        ranks.seed_epoch(config.seed, run.epoch)
        loss, seen = train_epoch(
            model, optimizer, sequences, config, generator, device, run.epoch, average, ranks
        )
        epoch_seconds = time.perf_counter() - epoch_started
        run.train_seconds, run.sequences = run.train_seconds + epoch_seconds, run.sequences + seen
        log.info(
            "epoch %d: loss %.4f, %.1fs, %.0f sequences/s",
            run.epoch,
            loss,
            epoch_seconds,
            seen / epoch_seconds,
        )
        if run.epoch % config.eval_every and run.epoch < config.epochs:
            continue

        model.eval()
        with average.swapped_in(model) if average is not None else nullcontext():
            ndcg = evaluate_model(
                model,
                *valid,
                k=config.k,
                batch_size=config.eval_batch_size,
                exclude_seen=config.mask_history,
            )[metric]
            ndcg = ranks.agree(ndcg)  # rank 0's, so every rank decides alike
            if ndcg > run.best_ndcg:
                run.best_ndcg, run.best_epoch, run.stale = ndcg, run.epoch, 0
                best_state = cpu_state(model)
            else:
                run.stale += 1
        run.history.append((run.epoch, ndcg))
        run.stopped = run.stale >= config.patience
        log.info(
            "epoch %d: valid %s %.4f (best %.4f at epoch %d)%s",
            run.epoch,
            metric,
            ndcg,
            run.best_ndcg,
            run.best_epoch,
            "; stopping early" if run.stopped else "",
        )
        if checkpoint_dir is not None and ranks.main:
            elapsed = run.seconds + time.perf_counter() - started
            save_checkpoint(
                {
                    "fingerprint": fingerprint,
                    "run": {**asdict(run), "seconds": elapsed},
                    "state": cpu_state(model),
                    "best_state": best_state,
                    "average": None if average is None else average.state,
                    "optimizer": optimizer.state_dict(),
                    "rng": rng_state(generator),
                },
                checkpoint_dir,
            )
        if report is not None:
            report(run.epoch, ndcg)  # may raise optuna.TrialPruned: the checkpoint is written

    model.load_state_dict(best_state)
    model.to("cpu").eval()
    seconds = run.seconds + time.perf_counter() - started
    log.info(
        "best valid %s %.4f at epoch %d of %d; %.1fs in all",
        metric,
        run.best_ndcg,
        run.best_epoch,
        run.epoch,
        seconds,
    )
    return TrainResult(
        best_valid_ndcg=run.best_ndcg,
        best_epoch=run.best_epoch,
        epochs=run.epoch,
        seconds=seconds,
        sequences_per_second=run.sequences / run.train_seconds if run.train_seconds else 0.0,
        device=device.type,
        history=tuple(run.history),
    )
