"""Training on 1 vs N processes (DDP, ``train.trainer.processes``): time and validation NDCG.

A benchmark, not a test. The full ``fit_gradient`` (evaluation, early stopping, the
ranks' start-up) of a SASRec on a synthetic noisy-successor log: item i is followed by
i + 1 (70%), i + 2 (15%) or a random item (15%); each user's last event is the
validation target. Rows: one process on every core's threads, one process on one thread,
and N processes (each ``cores // N`` threads).

    python bench/ddp.py [--users 3000] [--items 300] [--epochs 4] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from pipelines.models.base import Histories, TrainData, Validation
from pipelines.models.sasrec import SASRec
from pipelines.training.loop import TrainerConfig, fit_gradient, seed_everything

MODEL = {"hidden": 64, "heads": 2, "layers": 2, "ff_dim": 128, "dropout": 0.2, "max_len": 50}


def noisy_successors(users: int, items: int, seed: int = 0) -> tuple[TrainData, Validation]:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        item, sequence = int(rng.integers(items)), []
        for _ in range(int(rng.integers(20, 60))):
            sequence.append(item)
            step = rng.choice([1, 2, 0], p=[0.7, 0.15, 0.15])
            item = int(rng.integers(items)) if step == 0 else (item + step) % items
        sequences.append(sequence)
    history = Histories.from_lists(
        [s[:-1] for s in sequences], [list(range(len(s) - 1)) for s in sequences]
    )
    train = TrainData(sp.csr_matrix(history.to_matrix(items).numpy()), history, items)
    return train, Validation(history, torch.tensor([s[-1] for s in sequences]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    train, valid = noisy_successors(args.users, args.items)
    config = TrainerConfig(
        epochs=args.epochs, batch_size=64, lr=3e-3, patience=100, device="cpu", seed=1
    )
    cores = os.cpu_count() or 1
    rows = [(f"1 process, {cores} threads", 1, cores), ("1 process, 1 thread", 1, 1)]
    rows.append((f"{args.processes} processes", args.processes, max(1, cores // args.processes)))
    print(f"{args.users} users, {args.items} items, {args.epochs} epochs, {cores} cores")
    print("| run | wall s | sequences/s in steps | best valid NDCG@10 (epoch) |")
    print("|---|---|---|---|")
    for label, processes, threads in rows:
        torch.set_num_threads(threads)
        seed_everything(config.seed)
        model = SASRec(args.items, MODEL)
        started = time.perf_counter()
        result = fit_gradient(model, train, valid, replace(config, processes=processes))
        print(
            f"| {label} | {time.perf_counter() - started:.1f} | "
            f"{result.sequences_per_second:.0f} | "
            f"{result.best_valid_ndcg:.4f} ({result.best_epoch}/{result.epochs}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
