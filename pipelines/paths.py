"""Every file the pipeline reads or writes, relative to the repository root.

dvc.yaml names the same paths; tests/code/test_dvc_yaml.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"

# raw, validated snapshots only (tracked by data.dvc)
DATA = ROOT / "data"
INTERACTIONS = DATA / "interactions.parquet"
ITEMS = DATA / "items.parquet"
USERS = DATA / "users.parquet"

QUARANTINE = ROOT / "quarantine"
SECRETS = ROOT / ".secrets"
PSEUDONYM_KEY = SECRETS / "pseudonym.key"
DOWNLOADS = ROOT / ".cache" / "downloads"
EMBED_CACHE = ROOT / ".cache" / "embeddings"
CHECKPOINTS = ROOT / ".cache" / "checkpoints"
TUNE_CACHE = ROOT / ".cache" / "tune"  # Optuna studies, kept across runs so a kill resumes

ARTIFACTS = ROOT / "artifacts"

SPLIT_DIR = ARTIFACTS / "split"
SPLIT_INTERACTIONS = SPLIT_DIR / "interactions.parquet"
SPLIT_ITEMS = SPLIT_DIR / "items.parquet"
SPLIT_USERS = SPLIT_DIR / "users.parquet"
SPLIT_STATS = SPLIT_DIR / "stats.json"

FEATURES_DIR = ARTIFACTS / "features"
SEQUENCES = FEATURES_DIR / "sequences.parquet"
PROFILES = FEATURES_DIR / "profiles.parquet"
PROFILE_VOCAB = FEATURES_DIR / "profile_vocab.json"

EMBEDDINGS_DIR = ARTIFACTS / "embeddings"
ITEM_EMBEDDINGS = EMBEDDINGS_DIR / "items.npy"
EMBEDDINGS_META = EMBEDDINGS_DIR / "meta.json"

TUNE_DIR = ARTIFACTS / "tune"
TUNE_BEST = TUNE_DIR / "best.json"
TUNE_HISTORY = TUNE_DIR / "history.csv"
TUNE_FITTED = TUNE_DIR / "fitted"  # the best trial's model per tuned model

MODELS_DIR = ARTIFACTS / "models"

EVAL_DIR = ARTIFACTS / "eval"
EVAL_METRICS = EVAL_DIR / "metrics.json"
LEADERBOARD_MD = EVAL_DIR / "leaderboard.md"
FAIRNESS = EVAL_DIR / "fairness.json"

SELECTION_DIR = ARTIFACTS / "selection"
SELECTION = SELECTION_DIR / "selection.json"
SELECTION_LEADERBOARD_JSON = SELECTION_DIR / "leaderboard.json"
SELECTION_LEADERBOARD_MD = SELECTION_DIR / "leaderboard.md"

RELEASE_DIR = ARTIFACTS / "release"
BLESSING = RELEASE_DIR / "blessing.json"
BENTOML_HOME = ROOT / ".bentoml"  # the model store and Bentos, inside the project (git-ignored)
SERVE_TOKEN = SECRETS / "serve.token"  # the local bearer token, created once, mode 0600
DATA_DVC = ROOT / "data.dvc"

COLDSTART_DIR = ARTIFACTS / "coldstart"
COLDSTART_METRICS = COLDSTART_DIR / "metrics.json"
COLDSTART_MD = COLDSTART_DIR / "coldstart.md"
