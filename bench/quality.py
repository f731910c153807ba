"""Every model of the benchmark, 3 seeds each, on the default protocol, in one command.

    python bench/quality.py                 # dvc repro first, then the table
    python bench/quality.py --skip-repro    # reuse artifacts/ as they are
    python bench/quality.py --only sasrec fusion_transformer --seeds 42 43 44

1. `dvc repro` builds everything (tuning, training, evaluation, cold start, selection);
2. every model of `train.models` is re-trained from scratch with its resolved
   config (params.yaml + the tune stage's best trial) under each seed, and so is
   the flagship with each of its parts switched off (text, time, profile, id),
   and scored on the test split (mean ± std, design.md §4); closed-form models
   are deterministic, so one fit stands for all seeds;
3. the cold-start protocols (design.md §5) are run again for the winner and the
   fold-in baselines (EASE, ItemKNN) with ``--coldstart-folds`` folds (default 2),
   so the new-item target is held against the cross-fitted warm ceiling, the
   leak-free one that `make run` skips for time; ``--coldstart-folds 0`` reads
   the coldstart stage's numbers instead;
4. every comparison is paired on the same test users (``evaluation.stats``): each
   model against the winner, each ablation against the whole flagship, on the per-user
   NDCG@10 averaged over the seeds, with the bootstrap interval of the difference and a
   sign-flip test's p-value. The ± over seeds is training noise only; the interval is
   what says whether a difference is a gain.

Prints tables and how long it took; a missed target is reported with its
shortfall, never hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.core.config import load_params  # noqa: E402
from pipelines.core.paths import PROJECT  # noqa: E402
from pipelines.core.schema import TEST  # noqa: E402
from pipelines.evaluation.ranking import evaluate_per_user  # noqa: E402
from pipelines.evaluation.stats import Difference, paired_against  # noqa: E402
from pipelines.features.dataset import load_dataset, train_data, validation  # noqa: E402
from pipelines.features.sequences import histories_for, targets_for  # noqa: E402
from pipelines.stages import coldstart as coldstart_stage  # noqa: E402
from pipelines.training.fit import fit_model, read_tuned, resolve  # noqa: E402

# issue 7: the winner on the default protocol, mean over 3 seeds
TARGETS = {"ndcg@10": 0.125, "hr@10": 0.23, "mrr@10": 0.090}


ABLATIONS = {
    "text off": {"use_text": False},
    "time off": {"use_time": False},
    "profile off": {"use_profile": False},
    "id off": {"use_id": False},
}
FLAGSHIP = "fusion_transformer"
FOLD_IN = ("ease", "itemknn")  # the new-user baselines that fold in the same k events
COLDSTART_OUT = ROOT / "bench" / "results" / "coldstart"


def cross_fitted_coldstart(winner: str, folds: int, params_path: Path) -> Path:
    """The coldstart protocols with a cross-fitted warm ceiling; returns its metrics.json."""
    params = load_params(params_path)
    models = tuple(dict.fromkeys((winner, *FOLD_IN)))
    settings = params.coldstart.model_copy(update={"warm_folds": folds, "models": models})
    coldstart_stage.run(
        params.model_copy(update={"coldstart": settings}),
        features=PROJECT.features_dir,
        items=PROJECT.split_items,
        embeddings=PROJECT.item_embeddings,
        tuned=PROJECT.tune_best,
        models=PROJECT.models_dir,
        out=COLDSTART_OUT,
    )
    return COLDSTART_OUT / PROJECT.coldstart_metrics.name


def seed_runs(
    name: str, seeds: list[int], params_path: Path, switches: dict | None = None
) -> list[dict[str, float]]:
    """Test metrics of model ``name`` re-trained from scratch under each seed."""
    params = load_params(params_path)
    if switches:
        section = {**params.train.section(name), **switches}
        params = params.model_copy(
            update={"train": params.train.model_copy(update={name: section})}
        )
    dataset = load_dataset()
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    test_histories = histories_for(dataset.sequences, TEST, dataset.side.profiles)
    test_targets = targets_for(dataset.sequences, TEST)
    tuned = read_tuned(PROJECT.tune_best).get(name)
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        spec = resolve(name, params.train, seed, train, tuned, k=params.evaluate.k)
        model, _ = fit_model(spec, train, valid)
        metrics, per_user = evaluate_per_user(model, test_histories, test_targets, 10, 256)
        metrics["per_user"] = per_user.numpy()
        metrics["seconds"] = time.perf_counter() - started
        print(
            f"  {name}{' ' + str(switches) if switches else ''} seed {seed}: "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in TARGETS)
            + f" ({metrics['seconds']:.0f}s)",
            flush=True,
        )
        runs.append(metrics)
        if not model.trainable:  # closed form: every seed gives the same model
            runs += [metrics] * (len(seeds) - 1)
            break
    return runs


def summary_table(rows: dict[str, list[dict[str, float]]]) -> str:
    """One row per model: mean ± std of each metric over the seeds."""
    lines = [
        "| model | NDCG@10 | HR@10 | MRR@10 | seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, runs in rows.items():
        cells = []
        for metric in ("ndcg@10", "hr@10", "mrr@10"):
            values = [run[metric] for run in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} ± {std:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {len(runs)} |")
    return "\n".join(lines)


def user_means(runs: list[dict]) -> np.ndarray:
    """Each test user's NDCG@10, averaged over the seeds: [users]."""
    return np.mean([run["per_user"] for run in runs], axis=0)


def paired_table(title: str, reference: str, differences: dict[str, Difference]) -> str:
    lines = [
        f"### {title}: paired with {reference} on the same test users",
        "",
        "| model | Δ NDCG@10 | 95% interval | p (sign-flip) | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for name, diff in differences.items():
        lines.append(
            f"| {name} | {diff.mean:+.4f} | [{diff.low:+.4f}, {diff.high:+.4f}] "
            f"| {diff.p_value:.4f} | {diff.verdict} |"
        )
    return "\n".join(lines)


def paired_tables(rows: dict[str, list[dict]], winner_label: str) -> str:
    """Models against the winner; the flagship's ablations against the whole flagship."""
    ablated = {label for label in rows if label.startswith(f"{FLAGSHIP}, ")}
    models = {label: user_means(runs) for label, runs in rows.items() if label not in ablated}
    tables = []
    if winner_label in models and len(models) > 1:
        tables.append(paired_table("models", winner_label, paired_against(models, winner_label)))
    whole = next((label for label in models if label.split(" (")[0] == FLAGSHIP), None)
    if ablated and whole is not None:
        parts = {whole: models[whole], **{label: user_means(rows[label]) for label in ablated}}
        tables.append(paired_table("flagship parts", whole, paired_against(parts, whole)))
    return "\n\n".join(tables)


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


def coldstart_table(name: str, source: Path) -> str:
    if not source.exists():
        return "(no cold-start metrics: the coldstart stage has not run)"
    metrics = json.loads(source.read_text())["models"]
    if name not in metrics:
        return f"({name} is not in coldstart.models in params.yaml: no cold-start numbers)"
    items, users = metrics[name]["new_items"], metrics[name]["new_users"]
    shots = users["shots"]
    ceiling = "warm_cross_fitted" if "warm_cross_fitted" in items else "warm_ceiling"
    rows = [
        ratio_row(
            "new items: Recall@20 vs catalogue order",
            items["model"]["recall@20"],
            items["index_order"]["recall@20"],
            1.5,
        ),
        ratio_row(
            f"new items: Recall@20 vs own {ceiling.replace('_', ' ')}",
            items["model"]["recall@20"],
            items[ceiling]["recall@20"],
            0.70,
        ),
        ratio_row(
            "new users k=0: NDCG@10 vs popularity",
            shots["0"]["ndcg@10"],
            shots["0"]["popularity_ndcg@10"],
            1.5,
        ),
    ]
    fold_in = [m for m in FOLD_IN if m in metrics and m != name]
    for shot in (s for s in shots if s != "0"):
        if fold_in:
            best = max(fold_in, key=lambda m: metrics[m]["new_users"]["shots"][shot]["ndcg@10"])
            rows.append(
                ratio_row(
                    f"new users k={shot}: NDCG@10 vs {best} (best fold-in)",
                    shots[shot]["ndcg@10"],
                    metrics[best]["new_users"]["shots"][shot]["ndcg@10"],
                    1.2,
                )
            )
    note = (
        ""
        if ceiling == "warm_cross_fitted"
        else (
            "\n(the warm ceiling is not cross-fitted: coldstart.warm_folds >= 2 gives the fair one)"
        )
    )
    return (
        "\n".join(
            [
                f"### {name}, cold start (design.md §5)",
                "",
                "| target | value | reference | ratio | needed | verdict |",
                "|---|---:|---:|---:|---:|---|",
                *rows,
            ]
        )
        + note
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--skip-repro", action="store_true")
    parser.add_argument("--only", nargs="+", help="these models only (default: train.models)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the flagship ablations")
    parser.add_argument(
        "--params", type=Path, default=PROJECT.params, help="e.g. a copy with other values"
    )
    parser.add_argument(
        "--coldstart-folds",
        type=int,
        default=2,
        help="folds of the cross-fitted warm ceiling (0: use the coldstart stage's numbers)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if not args.skip_repro:
        subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ROOT, check=True)
    winner = json.loads(PROJECT.selection.read_text())["winner"]
    models = args.only or list(load_params(args.params).train.models)
    rows: dict[str, list[dict[str, float]]] = {}
    for name in models:
        rows[name + (" (winner)" if name == winner else "")] = seed_runs(
            name, args.seeds, args.params
        )
    if FLAGSHIP in models and not args.no_ablations:
        for label, switches in ABLATIONS.items():
            rows[f"{FLAGSHIP}, {label}"] = seed_runs(FLAGSHIP, args.seeds, args.params, switches)
    print()
    print(summary_table(rows))
    print()
    print(accuracy_table(winner, rows[winner + " (winner)"]) if winner in models else "")
    print()
    print(paired_tables(rows, winner + " (winner)"))
    print()
    source = PROJECT.coldstart_metrics
    if args.coldstart_folds:
        source = cross_fitted_coldstart(winner, args.coldstart_folds, args.params)
    print(coldstart_table(winner, source))
    print(f"\nbench/quality.py took {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
