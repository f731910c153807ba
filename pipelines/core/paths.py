"""Every file the pipeline and its loop read or write, defined once, under one root.

``Layout(root)`` is a frozen map from a name to a path under ``root``. The project is
``PROJECT`` (the repository); a replay workspace, or the tiny workspace of a DAG test,
is another ``Layout`` of the same shape, so one function serves both by being handed
the layout it works in. ``Layout.from_env()`` is the project unless
``$RECOPS_WORKSPACE`` names another root (what the DAG tasks use).

dvc.yaml names the stage outputs again; tests/code/test_dvc_yaml.py keeps the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "RECOPS_WORKSPACE"


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def from_env(cls) -> Layout:
        """The workspace the DAG tasks work in: ``$RECOPS_WORKSPACE``, else the project."""
        return cls(Path(os.environ.get(WORKSPACE_ENV) or PROJECT.root).resolve())

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the root when it lies inside (what outputs and messages
        show: an absolute path differs per clone), else as given."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    @property
    def is_dvc_project(self) -> bool:
        """A DVC project (the repository, or a replay's copy): data.dvc is kept in step."""
        return self.dvc_yaml.is_file() and (self.root / ".dvc").is_dir()

    # ---- definitions and secrets
    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_yaml(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def data_dvc(self) -> Path:
        return self.root / "data.dvc"

    @property
    def secrets(self) -> Path:
        return self.root / ".secrets"

    @property
    def pseudonym_key(self) -> Path:
        return self.secrets / "pseudonym.key"

    @property
    def serve_token(self) -> Path:  # the local bearer token, created once, mode 0600
        return self.secrets / "serve.token"

    # ---- raw, validated snapshots only (tracked by data.dvc)
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def interactions(self) -> Path:
        return self.data / "interactions.parquet"

    @property
    def items(self) -> Path:
        return self.data / "items.parquet"

    @property
    def users(self) -> Path:
        return self.data / "users.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def landing(self) -> Path:  # new batches arrive here
        return self.root / "landing"

    @property
    def processed(self) -> Path:  # batches moved here once appended, quarantined or duplicate
        return self.landing / ".processed"

    # ---- caches outside DVC's outputs (DVC would delete them before a stage runs)
    @property
    def downloads(self) -> Path:
        return self.root / ".cache" / "downloads"

    @property
    def embed_cache(self) -> Path:
        return self.root / ".cache" / "embeddings"

    @property
    def checkpoints(self) -> Path:
        return self.root / ".cache" / "checkpoints"

    @property
    def tune_cache(self) -> Path:  # Optuna studies, kept across runs so a kill resumes
        return self.root / ".cache" / "tune"

    # ---- stage outputs (dvc.yaml)
    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def split_dir(self) -> Path:
        return self.artifacts / "split"

    @property
    def split_interactions(self) -> Path:
        return self.split_dir / "interactions.parquet"

    @property
    def split_items(self) -> Path:
        return self.split_dir / "items.parquet"

    @property
    def split_users(self) -> Path:
        return self.split_dir / "users.parquet"

    @property
    def split_stats(self) -> Path:
        return self.split_dir / "stats.json"

    @property
    def features_dir(self) -> Path:
        return self.artifacts / "features"

    @property
    def sequences(self) -> Path:
        return self.features_dir / "sequences.parquet"

    @property
    def profiles(self) -> Path:
        return self.features_dir / "profiles.parquet"

    @property
    def profile_vocab(self) -> Path:
        return self.features_dir / "profile_vocab.json"

    @property
    def embeddings_dir(self) -> Path:
        return self.artifacts / "embeddings"

    @property
    def item_embeddings(self) -> Path:
        return self.embeddings_dir / "items.npy"

    @property
    def embeddings_meta(self) -> Path:
        return self.embeddings_dir / "meta.json"

    @property
    def tune_dir(self) -> Path:
        return self.artifacts / "tune"

    @property
    def tune_best(self) -> Path:
        return self.tune_dir / "best.json"

    @property
    def tune_history(self) -> Path:  # <model>.csv: each trial's value and the best so far
        return self.tune_dir / "history"

    @property
    def tune_fitted(self) -> Path:  # the best trial's model per tuned model
        return self.tune_dir / "fitted"

    @property
    def models_dir(self) -> Path:
        return self.artifacts / "models"

    @property
    def eval_dir(self) -> Path:
        return self.artifacts / "eval"

    @property
    def eval_metrics(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def leaderboard_md(self) -> Path:
        return self.eval_dir / "leaderboard.md"

    @property
    def fairness(self) -> Path:
        return self.eval_dir / "fairness.json"

    @property
    def eval_paired(self) -> Path:  # every model vs the best on validation, same test users
        return self.eval_dir / "paired.json"

    @property
    def coldstart_dir(self) -> Path:
        return self.artifacts / "coldstart"

    @property
    def coldstart_metrics(self) -> Path:
        return self.coldstart_dir / "metrics.json"

    @property
    def coldstart_md(self) -> Path:
        return self.coldstart_dir / "coldstart.md"

    @property
    def selection_dir(self) -> Path:
        return self.artifacts / "selection"

    @property
    def selection(self) -> Path:
        return self.selection_dir / "selection.json"

    @property
    def selection_leaderboard_json(self) -> Path:
        return self.selection_dir / "leaderboard.json"

    @property
    def selection_leaderboard_md(self) -> Path:
        return self.selection_dir / "leaderboard.md"

    @property
    def gate_dir(self) -> Path:  # the paired champion-challenger evidence, the winner's blend
        return self.artifacts / "gate"

    @property
    def gate(self) -> Path:
        return self.gate_dir / "gate.json"

    @property
    def gate_blend(self) -> Path:
        return self.gate_dir / "blend.json"

    @property
    def release_dir(self) -> Path:
        return self.artifacts / "release"

    @property
    def blessing(self) -> Path:
        return self.release_dir / "blessing.json"

    @property
    def bentoml_home(self) -> Path:  # the model store and Bentos (git-ignored)
        return self.root / ".bentoml"

    # ---- the operations loop (pipelines/loop)
    @property
    def monitoring(self) -> Path:  # monitoring/<batch>/{report.html,decision.json}
        return self.artifacts / "monitoring"

    @property
    def baseline(self) -> Path:  # the served champion's NDCG on its first week in service
        return self.monitoring / "baseline.json"

    @property
    def lineage(self) -> Path:  # data versions retrained on, and what each produced
        return self.artifacts / "retrain" / "lineage.json"

    @property
    def serving(self) -> Path:  # what is served now: bento tag, port, pid
        return self.artifacts / "serving" / "current.json"

    @property
    def live_state(self) -> Path:  # events, items and profiles since training (SQLite, WAL)
        return self.artifacts / "serving" / "live.sqlite"

    @property
    def orchestration(self) -> Path:  # repro.log, failures.log
        return self.artifacts / "orchestration"

    @property
    def repro_log(self) -> Path:
        return self.orchestration / "repro.log"

    @property
    def failures_log(self) -> Path:
        return self.orchestration / "failures.log"

    @property
    def replay(self) -> Path:  # weeks.md, weeks.json, quality.csv of `make replay`
        return self.artifacts / "replay"

    @property
    def replay_workspace(self) -> Path:  # no hidden folder: BentoML refuses one
        return self.replay / "workspace"

    @property
    def stream_workspace(self) -> Path:  # the workspace `make stream` starts Airflow on
        return self.artifacts / "stream" / "workspace"


PROJECT = Layout(Path(__file__).resolve().parents[2])
