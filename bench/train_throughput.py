"""Training throughput (sequences/second) of the gradient models, per device.

A benchmark, not a test: it runs the trainer's own epoch (``train_epoch``, the
same batching, autocast and optimiser step as ``fit_gradient``) without
evaluation, on the real ML-100K training sequences when the features stage
has produced them, else on synthetic ones of the same shape.

    python bench/train_throughput.py                      # CPU, and CUDA when present
    python bench/train_throughput.py --device cpu --epochs 2 --threads 2
    python bench/train_throughput.py --model sasrec --config '{"hidden": 128}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.core.paths import PROJECT
from pipelines.features.sequences import histories_for
from pipelines.models import MODELS, build_model
from pipelines.models.base import Histories
from pipelines.training.loop import Sequences, TrainerConfig, param_groups, train_epoch

# ML-100K after the 5-core filter: 943 users, 1,349 items, 17-646 training events (median 62)
SHAPE = {"users": 943, "items": 1349, "min_len": 17, "max_len": 646, "median_len": 62}


def load_sequences(features: Path, split: Path) -> tuple[Histories, int, str]:
    """Real training histories when present, else synthetic ones shaped like ML-100K."""
    sequences_path, items_path = features / PROJECT.sequences.name, split / PROJECT.split_items.name
    if sequences_path.exists() and items_path.exists():
        sequences = pd.read_parquet(sequences_path)
        n_items = len(pd.read_parquet(items_path))
        return histories_for(sequences, "train"), n_items, f"real ({sequences_path})"
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(np.log(SHAPE["median_len"]), 0.9, SHAPE["users"]).astype(int)
    lengths = np.clip(lengths, SHAPE["min_len"], SHAPE["max_len"])
    items = [rng.integers(0, SHAPE["items"], n).tolist() for n in lengths]
    histories = Histories.from_lists(items, [list(range(n)) for n in lengths])
    return histories, SHAPE["items"], "synthetic (ML-100K shape)"


def measure(
    name: str, config: dict, histories: Histories, n_items: int, trainer: TrainerConfig, epochs: int
) -> dict[str, float | str]:
    """Sequences/second of each epoch; the first epoch (warm-up) is reported apart."""
    device = torch.device(trainer.device)
    torch.manual_seed(trainer.seed)
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = build_model(name, n_items, config).to(device)
    if not model.trainable:
        raise SystemExit(f"{name} is fitted in closed form: no training throughput to measure")
    optimizer = torch.optim.AdamW(param_groups(model, trainer.weight_decay), lr=trainer.lr)
    sequences = Sequences.from_histories(histories)
    generator = torch.Generator().manual_seed(trainer.seed)
    rates = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        _, seen = train_epoch(model, optimizer, sequences, trainer, generator, device, epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    steady = rates[1:] or rates
    return {
        "model": name,
        "device": device.type + (" bf16" if device.type == "cuda" and trainer.amp else " fp32"),
        "threads": torch.get_num_threads() if device.type == "cpu" else "-",
        "sequences/epoch": seen,
        "first epoch seq/s": rates[0],
        "steady seq/s": statistics.median(steady),
        "s/epoch": seen / statistics.median(steady),
    }


def markdown(rows: list[dict[str, float | str]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name; repeat for several")
    parser.add_argument("--config", default="{}", help="model config overrides, JSON")
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CPU, and CUDA too when present",
    )
    parser.add_argument("--epochs", type=int, default=3, help="the first one counts as warm-up")
    parser.add_argument("--batch-size", type=int, default=TrainerConfig.batch_size)
    parser.add_argument(
        "--max-len", type=int, default=200, help="events attended to (model max_len)"
    )
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--features", type=Path, default=PROJECT.features_dir)
    parser.add_argument("--split", type=Path, default=PROJECT.split_dir)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [args.device] if args.device != "auto" else ["cpu"]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append("cuda")
    histories, n_items, source = load_sequences(args.features, args.split)
    config = {"max_len": args.max_len, **json.loads(args.config)}
    rows = []
    for name in args.model or ["sasrec"]:
        for device in devices:
            trainer = TrainerConfig(batch_size=args.batch_size, device=device, amp=not args.no_amp)
            rows.append(measure(name, config, histories, n_items, trainer, args.epochs))
    print(f"data: {source}; {n_items} items; batch {args.batch_size}, max_len {args.max_len}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
