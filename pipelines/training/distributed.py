"""Training on several processes: PyTorch DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA).

``TrainerConfig.processes`` (``train.trainer.processes`` in params.yaml) above 1 makes
``fit_gradient`` hand its fit to :func:`launch`, which writes the model, data and config to
a private temporary folder and runs ``torchrun --nproc-per-node <processes> -m
pipelines.training.distributed <folder>`` on this host (the ranks meet through files in that
folder, and talk over loopback: nothing listens beyond 127.0.0.1). Each
process (a *rank*) runs the same loop (``training.loop``) with a :class:`Group`:

- **the same batches, split**: every rank draws the epoch's batches from the same seeded
  generator, and rank r takes every ``world``-th one (wrapping round, so every rank takes
  the same number of steps); DDP averages the gradients, so one step is one step on
  ``world`` batches (an effective batch of ``world x batch_size`` sequences);
- **the same weights**: the parent built and seeded the model, every rank starts from it
  (and DDP broadcasts rank 0's parameters when it wraps the model); dropout draws from a
  seed of (seed, epoch, rank), so runs and resumed runs repeat exactly;
- **one decision**: every rank runs the validation pass (in parallel: it costs no wall
  time), and rank 0's NDCG@10 is broadcast, so the best epoch, early stopping and the end
  are the same on every rank; all stop together;
- **one writer**: rank 0 alone writes the checkpoints (each rank resumes from them: they
  lie on one disk) and the trained weights the parent loads back.

The parent then holds the trained model, as after a one-process fit. An Optuna pruner's
``report`` cannot reach into the ranks: it is called afterwards for each evaluation, so a
trial it would have pruned ends pruned, without the time saved.

On CUDA each rank takes the GPU of its local rank (NCCL); on CPU each takes
``cpu_count // processes`` threads. The NCCL path is written to the same contract but was
not run here (no GPU on this machine); the gloo path is tested
(tests/training/test_distributed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from pipelines.core.device import resolve_device

if TYPE_CHECKING:
    from pipelines.models.base import Histories, Recommender, TrainData, Validation
    from pipelines.training.loop import TrainerConfig, TrainResult

log = logging.getLogger(__name__)

JOB, RESULT = "job.pt", "result.pt"  # in the launch folder: what the ranks read and write
# the ranks meet through files in the launch folder, not a TCP store: torch's TCPStore
# listens on every interface whatever address it is given, and one host needs no network
RENDEZVOUS, STORE = "rendezvous", "store"
STORE_ENV = "RECOPS_DDP_STORE"  # set by launch: the ranks' FileStore; unset = env:// (torchrun)
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]  # where `pipelines` imports from, for the ranks


class _Loss(torch.nn.Module):
    """DDP synchronises a module's ``forward``; our models train through ``loss``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Histories) -> torch.Tensor:
        return self.model.loss(batch)


class Group:
    """This process's place among the training processes; the one-process group does nothing."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.rank, self.world = rank, world
        self.device = device or torch.device("cpu")
        self._wrapped: torch.nn.parallel.DistributedDataParallel | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    def shard(self, batches: list) -> list:
        """This rank's share of an epoch's batches; every rank gets the same number of steps."""
        if self.world == 1 or not batches:
            return batches
        steps = math.ceil(len(batches) / self.world)
        return [batches[(step * self.world + self.rank) % len(batches)] for step in range(steps)]

    def loss(self, model: Recommender) -> Callable[[Histories], torch.Tensor]:
        """``model.loss``, through DDP when there are several processes (wrapped once)."""
        if self.world == 1:
            return model.loss
        if self._wrapped is None or self._wrapped.module.model is not model:
            cuda = self.device.type == "cuda"
            self._wrapped = torch.nn.parallel.DistributedDataParallel(
                _Loss(model),
                device_ids=[torch.cuda.current_device()] if cuda else None,
                # a model may leave a part out of a loss (no profiles in a batch, say)
                find_unused_parameters=True,
                # our models' buffers are constants (item vectors, masks): nothing to sync
                broadcast_buffers=False,
            )
        return self._wrapped

    def agree(self, value: float) -> float:
        """Rank 0's value, on every rank."""
        if self.world == 1:
            return value
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Each rank's own dropout stream for this epoch, a function of (seed, epoch, rank)."""
        if self.world > 1:
            state = np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)
            torch.manual_seed(int(state[0]))


SINGLE = Group()


# -- the parent: hand the fit to torchrun --------------------------------------------------
def _rank_env(processes: int, job: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[STORE_ENV] = str(job / STORE)
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # the agent starts no TCP store either
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # CPU threads shared out between the ranks (torchrun would give each one thread)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks talk over loopback, one host
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    return env


def launch(
    model: Recommender,
    train: TrainData,
    valid: Validation,
    config: TrainerConfig,
    checkpoint_dir: Path | None = None,
    report: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fit ``model`` on ``config.processes`` processes; it comes back trained, as from one."""
    from pipelines.training.loop import TrainResult

    started = time.perf_counter()
    device = resolve_device(config.device)
    if device.type == "cuda" and torch.cuda.device_count() < config.processes:
        raise ValueError(
            f"train.trainer.processes is {config.processes} but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s): one process per GPU"
        )
    with tempfile.TemporaryDirectory(prefix="recops-ddp-") as folder:
        job = Path(folder)
        # a private hand-over inside one fit (never an artifact): the model object itself,
        # so every rank starts from exactly the weights and buffers built and seeded here
        torch.save(
            {
                "model": model.to("cpu"),
                "train": train,
                "valid": valid,
                "config": config,
                "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
            },
            job / JOB,
        )
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            f"--nproc-per-node={config.processes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={job / RENDEZVOUS}",
            "--rdzv-conf=store_type=file",
            f"--local-addr={HOST}",
            "-m",
            "pipelines.training.distributed",
            str(job),
        ]
        log.info("%s: training on %d processes (torchrun)", model.name, config.processes)
        tail: deque[str] = deque(maxlen=5)
        with subprocess.Popen(
            command,
            env=_rank_env(config.processes, job),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as ranks:
            assert ranks.stdout is not None
            for line in ranks.stdout:  # the ranks' log, as this process's
                line = line.rstrip()
                if line:
                    tail.append(line)
                    log.info("  %s", line)
        if ranks.returncode != 0 or not (job / RESULT).exists():
            raise RuntimeError(
                f"{model.name}: training on {config.processes} processes failed "
                f"(torchrun exit {ranks.returncode}): {' | '.join(tail) or 'no output'}"
            )
        out = torch.load(job / RESULT, map_location="cpu", weights_only=True)
    model.load_state_dict(out["state"])
    model.to("cpu").eval()
    record = out["result"]
    result = TrainResult(
        best_valid_ndcg=float(record["best_valid_ndcg"]),
        best_epoch=int(record["best_epoch"]),
        epochs=int(record["epochs"]),
        device=str(record["device"]),
        history=tuple((int(e), float(n)) for e, n in record["history"]),
        seconds=time.perf_counter() - started,
        sequences_per_second=float(record["sequences_per_second"]),
    )
    if report is not None:  # the pruner hears every evaluation, after the fact
        for epoch, ndcg in result.history:
            report(epoch, ndcg)
    return result


# -- a rank ----------------------------------------------------------------------------------
def run_rank(job: Path) -> int:
    """One rank of a launch: join the group, train, and (rank 0) write the result."""
    from pipelines.training.loop import cpu_state, fit_gradient

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    payload: dict[str, Any] = torch.load(job / JOB, map_location="cpu", weights_only=False)
    config = payload["config"]
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(local)  # "cuda" is now this rank's own GPU
    # rank 0 tells the story; the others speak up only when something goes wrong
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"rank {rank}: %(message)s")
    cuda = device.type == "cuda"
    store = os.environ.get(STORE_ENV)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"file://{store}" if store else "env://",
        rank=rank,
        world_size=world,
    )
    try:
        group = Group(rank, world, torch.device("cuda", local) if cuda else device)
        model = payload["model"]
        checkpoint_dir = payload["checkpoint_dir"]
        result = fit_gradient(
            model,
            payload["train"],
            payload["valid"],
            config,
            None if checkpoint_dir is None else Path(checkpoint_dir),
            ranks=group,
        )
        if group.main:
            record = {**dataclasses.asdict(result), "history": [list(h) for h in result.history]}
            torch.save({"state": cpu_state(model), "result": record}, job / RESULT)
        dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_rank(Path(sys.argv[1])))
