"""dvc.yaml and the code agree: every stage has its module and its params section as deps."""

from __future__ import annotations

import importlib

import yaml

from pipelines import paths

STAGES = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_runs_its_own_module_and_depends_on_it() -> None:
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m pipelines.{name}", name
        assert f"pipelines/{name}.py" in stage["deps"], name
        assert hasattr(importlib.import_module(f"pipelines.{name}"), "main"), name


def test_every_stage_depends_on_its_params_section() -> None:
    for name, stage in STAGES.items():
        assert name in stage.get("params", []), name


def test_outputs_live_under_artifacts() -> None:
    for name, stage in STAGES.items():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path = out if isinstance(out, str) else next(iter(out))
            assert path.startswith("artifacts/"), (name, path)


def test_stage_outputs_match_the_paths_module() -> None:
    declared = {
        (out if isinstance(out, str) else next(iter(out)))
        for stage in STAGES.values()
        for out in stage.get("outs", []) + stage.get("metrics", [])
    }
    for path in (
        paths.SPLIT_DIR,
        paths.FEATURES_DIR,
        paths.EMBEDDINGS_DIR,
        paths.MODELS_DIR,
        paths.EVAL_METRICS,
        paths.LEADERBOARD_MD,
        paths.SELECTION,
    ):
        assert str(path.relative_to(paths.ROOT)) in declared
