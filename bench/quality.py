"""Reproduce the quality target table from a clean artifacts/ in one command.

    python bench/quality.py                 # dvc repro, then 3 seeds of the winner
    python bench/quality.py --skip-repro    # reuse artifacts/ as they are

1. `dvc repro` builds everything (tuning, training, evaluation, cold start, selection);
2. the winner chosen on validation NDCG@10 is re-trained with its tuned
   hyperparameters under each seed and scored on the test split
   (mean ± std, design.md §4);
3. the cold-start targets are read from the coldstart stage (design.md §5).

Prints tables; a missed target is reported with its shortfall, never hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import paths  # noqa: E402
from pipelines.config import load_params  # noqa: E402
from pipelines.evaluation.ranking import evaluate_model  # noqa: E402
from pipelines.features.dataset import load_dataset, train_data, validation  # noqa: E402
from pipelines.features.sequences import histories_for, targets_for  # noqa: E402
from pipelines.schema import TEST  # noqa: E402
from pipelines.training.fit import fit_model, read_tuned, resolve  # noqa: E402

TARGETS = {"ndcg@10": 0.085, "hr@10": 0.165, "mrr@10": 0.060}


def seed_runs(name: str, seeds: list[int], params_path: Path) -> list[dict[str, float]]:
    """Test metrics of model ``name`` re-trained from scratch under each seed."""
    params = load_params(params_path)
    dataset = load_dataset()
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    test_histories = histories_for(dataset.sequences, TEST, dataset.side.profiles)
    test_targets = targets_for(dataset.sequences, TEST)
    tuned = read_tuned(paths.TUNE_BEST).get(name)
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        spec = resolve(name, params.train, seed, train, tuned)
        model, _ = fit_model(spec, train, valid)
        metrics = evaluate_model(model, test_histories, test_targets, 10, 256)
        metrics["seconds"] = time.perf_counter() - started
        print(
            f"  seed {seed}: "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in TARGETS)
            + f" ({metrics['seconds']:.0f}s)",
            flush=True,
        )
        runs.append(metrics)
    return runs


def accuracy_table(name: str, runs: list[dict[str, float]]) -> str:
    lines = [
        f"### {name}, test split, {len(runs)} seeds",
        "",
        "| metric | mean ± std | target | verdict |",
        "|---|---:|---:|---|",
    ]
    for metric, target in TARGETS.items():
        values = [run[metric] for run in runs]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        verdict = "met" if mean >= target else f"missed by {target - mean:.4f}"
        lines.append(f"| {metric} | {mean:.4f} ± {std:.4f} | ≥ {target} | {verdict} |")
    return "\n".join(lines)


def ratio_row(label: str, value: float, reference: float, needed: float) -> str:
    ratio = value / reference if reference else float("inf")
    verdict = "met" if ratio >= needed else f"missed: {ratio:.2f} < {needed}"
    return f"| {label} | {value:.4f} | {reference:.4f} | {ratio:.2f} | ≥ {needed} | {verdict} |"


def coldstart_table(name: str) -> str:
    if not paths.COLDSTART_METRICS.exists():
        return "(no cold-start metrics: the coldstart stage has not run)"
    metrics = json.loads(paths.COLDSTART_METRICS.read_text())["models"]
    if name not in metrics:
        return f"({name} is not in coldstart.models in params.yaml: no cold-start numbers)"
    items, users = metrics[name]["new_items"], metrics[name]["new_users"]
    shots = users["shots"]
    return "\n".join(
        [
            f"### {name}, cold start (design.md §5)",
            "",
            "| target | value | reference | ratio | needed | verdict |",
            "|---|---:|---:|---:|---:|---|",
            ratio_row(
                "new items: Recall@20 vs own warm ceiling",
                items["model"]["recall@20"],
                items["warm_ceiling"]["recall@20"],
                0.70,
            ),
            ratio_row(
                "new items: Recall@20 vs random",
                items["model"]["recall@20"],
                items["random"]["recall@20"],
                2.0,
            ),
            ratio_row(
                "new users k=0: NDCG@10 vs popularity",
                shots["0"]["ndcg@10"],
                shots["0"]["popularity_ndcg@10"],
                1.20,
            ),
            ratio_row(
                "new users k=5: NDCG@10 vs full history",
                shots["5"]["ndcg@10"],
                users["full_history"]["ndcg@10"],
                0.70,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--skip-repro", action="store_true")
    parser.add_argument("--model", help="score this model instead of the selected winner")
    parser.add_argument(
        "--params", type=Path, default=paths.PARAMS, help="e.g. a copy with an ablation switch off"
    )
    args = parser.parse_args()
    if not args.skip_repro:
        subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ROOT, check=True)
    name = args.model or json.loads(paths.SELECTION.read_text())["winner"]
    print(f"re-training {name} under seeds {args.seeds}", flush=True)
    runs = seed_runs(name, args.seeds, args.params)
    print()
    print(accuracy_table(name, runs))
    print()
    print(coldstart_table(name))


if __name__ == "__main__":
    main()
