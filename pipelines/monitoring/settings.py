"""Typed settings of the monitoring and replay loop, and the folders it works in.

``load_settings`` reads only the ``monitoring:``, ``replay:`` and ``retrain:`` sections of
params.yaml (typed in pipelines/config.py), so a DAG task does not need the rest.

``Workspace`` is every folder the loop reads or writes. It defaults to the
repository; ``$RECOPS_WORKSPACE`` moves all of it under another root (the DAG
tests run the real DAGs on tiny data in a temporary folder that way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from pipelines import paths
from pipelines.config import MonitoringParams, ReplayParams, RetrainParams

WORKSPACE_ENV = "RECOPS_WORKSPACE"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Settings(_Frozen):
    monitoring: MonitoringParams = MonitoringParams()
    replay: ReplayParams = ReplayParams()
    retrain: RetrainParams = RetrainParams()


def load_settings(path: Path | None = None) -> Settings:
    path = Path(path or paths.PARAMS)
    raw = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    return Settings.model_validate(
        {k: raw[k] for k in ("monitoring", "replay", "retrain") if k in raw}
    )


@dataclass(frozen=True)
class Workspace:
    """Every folder of the loop (TODO(config): the defaults move to pipelines/paths.py)."""

    root: Path

    @classmethod
    def from_env(cls) -> Workspace:
        return cls(Path(os.environ.get(WORKSPACE_ENV) or paths.ROOT).resolve())

    @property
    def is_dvc_project(self) -> bool:
        """A DVC project (the repository, or a replay's copy of it): data.dvc is kept in step."""
        return (self.root / "dvc.yaml").is_file() and (self.root / ".dvc").is_dir()

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def landing(self) -> Path:  # new batches arrive here
        return self.root / "landing"

    @property
    def processed(self) -> Path:  # batches moved here once appended, quarantined or duplicate
        return self.root / "landing" / ".processed"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def monitoring(self) -> Path:  # artifacts/monitoring/<batch>/{report.html,decision.json}
        return self.root / "artifacts" / "monitoring"

    @property
    def baseline(self) -> Path:  # the served champion's NDCG on its first week in service
        return self.root / "artifacts" / "monitoring" / "baseline.json"

    @property
    def retrain_state(self) -> Path:  # data versions already retrained on, and what they produced
        return self.root / "artifacts" / "retrain" / "lineage.json"

    @property
    def serving(self) -> Path:  # what is served now: bento tag, port, pid
        return self.root / "artifacts" / "serving" / "current.json"

    @property
    def bentoml_home(self) -> Path:
        return self.root / ".bentoml"
