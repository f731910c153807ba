"""The real DVC pipeline on a small synthetic snapshot, in a scratch copy of the repo.

Protects the promises of dvc.yaml: a repro builds everything, a second repro
does nothing, and changing EASE's λ re-runs only `train` and what follows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_params
from pipelines.core.paths import PROJECT

pytestmark = pytest.mark.integration

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def synthetic_snapshot(directory: Path, n_users: int = 60, n_items: int = 40) -> None:
    """Tables shaped like ingestion's output: privacy-safe users, every user ≥ 8 events."""
    rng = np.random.default_rng(7)
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items, size=rng.integers(8, 20), replace=False)
        start = 880_000_000 + int(rng.integers(0, 10**6))
        rows += [(f"u_{user:016x}", str(i + 1), 4.0, start + 3600 * t) for t, i in enumerate(items)]
    directory.mkdir(parents=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_parquet(
        directory / "interactions.parquet", index=False
    )
    pd.DataFrame(
        {
            "item_id": [str(i + 1) for i in range(n_items)],
            "title": [f"Film number {i + 1}" for i in range(n_items)],
            "year": pd.array([1980 + i % 20 for i in range(n_items)], dtype="Int64"),
            "genres": [[GENRES[i % 6], GENRES[(i * 5) % 6]] for i in range(n_items)],
        }
    ).to_parquet(directory / "items.parquet", index=False)
    pd.DataFrame(
        {
            "user_id": [f"u_{u:016x}" for u in range(n_users)],
            "age_band": ["25-34"] * n_users,
            "gender": ["F", "M"] * (n_users // 2),
            "occupation": ["other"] * n_users,
            "region": ["100"] * n_users,
        }
    ).to_parquet(directory / "users.parquet", index=False)


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def replace_once(path: Path, old: str, new: str) -> None:
    """Edit a file by string replacement, failing loudly when the text is not there."""
    text = path.read_text()
    assert text.count(old) == 1, f"expected exactly one {old!r} in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A scratch repo with the pipeline's code, synthetic data, and one full `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("pipelines", "dags", "services", "dvc.yaml", "params.yaml", ".dvcignore"):
        source = PROJECT.root / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    # EASE untuned here, so its λ in params.yaml is the one that counts
    replace_once(root / "params.yaml", "    ease: 8\n", "")
    # 60 users: below select.min_users, which would refuse to crown a winner on so few
    replace_once(root / "params.yaml", "  min_users: 100\n", "  min_users: 50\n")
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], root)
    run([*dvc, "init", "-q"], root)
    run([*dvc, "config", "core.analytics", "false"], root)
    synthetic_snapshot(root / "data")
    run([*dvc, "add", "-q", "data"], root)
    return root, run([*dvc, "repro"], root)


@pytest.fixture
def repo(built: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the built repo: no test sees another test's edits."""
    copy = tmp_path / "repo"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy


def stale_stages(repo: Path) -> set[str]:
    status = run([sys.executable, "-m", "dvc", "status", "--json"], repo)
    return set(json.loads(status[status.index("{") :]))


def test_repro_builds_every_output(built: tuple[Path, str]) -> None:
    repo, output = built
    assert ran_stages(output) == {
        "split",
        "features",
        "embed",
        "tune",
        "train",
        "evaluate",
        "coldstart",
        "select",
        "gate",
        "package",
    }
    metrics = json.loads((repo / "artifacts/eval/metrics.json").read_text())
    assert set(metrics) == set(load_params(repo / "params.yaml").train.models)
    selection = json.loads((repo / "artifacts/selection/selection.json").read_text())
    assert selection["winner"] in metrics
    assert np.load(repo / "artifacts/embeddings/items.npy").shape == (40, 384)
    record = json.loads((repo / "artifacts/models/ease/training.json").read_text())
    assert record["config"]["sources"]["l2"] == "params.yaml"
    # the tuned gradient models reuse their best trial's fit instead of fitting it again
    for name in ("sasrec", "fusion_transformer"):
        record = json.loads((repo / f"artifacts/models/{name}/training.json").read_text())
        assert record["origin"].endswith(f"artifacts/tune/fitted/{name}"), (name, record)
        # its training curve, the DVC plot: one row per evaluated epoch, as the fit recorded
        curve = pd.read_csv(repo / f"artifacts/models/{name}/curve.csv")
        history = record["result"]["history"]
        assert curve["epoch"].tolist() == [epoch for epoch, _ in history]
        assert curve["valid_ndcg"].tolist() == pytest.approx([n for _, n in history], abs=1e-6)


def test_tune_writes_its_outputs_and_train_uses_the_best_trial(
    built: tuple[Path, str],
) -> None:
    # tune writes best.json, history/<model>.csv and <model>_history.html, and
    # train re-fits each tuned model with its best trial's values
    import optuna

    repo = built[0]
    tune = repo / "artifacts" / "tune"
    params = load_params(repo / "params.yaml")
    tuned = {name for name, budget in params.tune.trials.items() if budget > 0}
    best = json.loads((tune / "best.json").read_text())
    assert set(best) == tuned and "ease" not in tuned  # the fixture left EASE untuned
    for name in tuned:
        entry = best[name]
        assert entry["trials"] == params.tune.trials[name]
        rows = pd.read_csv(tune / "history" / f"{name}.csv")
        assert len(rows) == entry["trials"] - entry["pruned"] - entry["failed"]
        assert rows["value"].max() == pytest.approx(entry["value"])
        assert rows["best"].is_monotonic_increasing
        assert "plotly" in (tune / f"{name}_history.html").read_text()
        # the study lives in the tune cache (keyed by what it depends on), not in the outputs
        (db,) = (repo / ".cache" / "tune").glob(f"{name}-*.db")
        study = optuna.load_study(study_name=None, storage=f"sqlite:///{db}")
        assert study.best_trial.number == entry["trial"]
        assert study.best_value == pytest.approx(entry["value"])
        record = json.loads((repo / f"artifacts/models/{name}/training.json").read_text())
        used, sources = record["config"], record["config"]["sources"]
        assert entry["model"], name
        for part, prefix in (("model", ""), ("trainer", "trainer.")):
            for key, value in entry[part].items():
                assert sources[prefix + key] == f"tune trial {entry['trial']}", (name, key)
                assert used[part][key] == pytest.approx(value), (name, key)


def test_second_repro_does_nothing(repo: Path) -> None:
    output = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert ran_stages(output) == set()
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], repo)


def test_changing_ease_lambda_reruns_what_reads_train_params(repo: Path) -> None:
    # tune reads train (its trial 0 is the params.yaml values); coldstart fits with them too
    replace_once(repo / "params.yaml", "l2: 250.0", "l2: 100.0")
    output = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert ran_stages(output) == {
        "tune",
        "train",
        "evaluate",
        "coldstart",
        "select",
        "gate",
        "package",
    }
    record = json.loads((repo / "artifacts/models/ease/training.json").read_text())
    assert record["config"]["model"]["l2"] == 100.0


def test_changing_the_metrics_code_marks_every_stage_that_uses_it_stale(repo: Path) -> None:
    # early stopping and tuning rank by NDCG: a change there must not leave models "up to date"
    metrics = repo / "pipelines" / "evaluation" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# a comment changes the file's hash\n")
    assert stale_stages(repo) == {"tune", "train", "evaluate", "coldstart", "gate"}


def test_dag_code_marks_nothing_stale_and_serving_code_only_the_bento(repo: Path) -> None:
    (repo / "dags").mkdir(exist_ok=True)
    (repo / "dags" / "changed.py").write_text("VALUE = 1\n")
    assert stale_stages(repo) == set()
    (repo / "services").mkdir(exist_ok=True)
    (repo / "services" / "changed.py").write_text("VALUE = 1\n")
    assert stale_stages(repo) == {"package"}  # the Bento carries the service code
