"""dvc.yaml and the code agree: every stage depends on everything it imports, and its params."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from pipelines.core.config import Params
from pipelines.core.paths import PROJECT
from tests.code.imports import closure

STAGES = yaml.safe_load((PROJECT.root / "dvc.yaml").read_text())["stages"]


def stage_deps(stage: dict) -> set[Path]:
    return {
        PROJECT.root / (dep if isinstance(dep, str) else next(iter(dep))) for dep in stage["deps"]
    }


def covered(path: Path, deps: set[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


def test_every_stage_runs_its_own_stage_module() -> None:
    # `exec`: DVC runs the command through a shell, and dash (/bin/sh, used when $SHELL
    # is unset) stays as the stage's parent; a stage ties its life to its parent, so
    # without exec it would outlive a killed `dvc repro` and publish after it
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"exec python -m pipelines.stages.{name}", name
        module = importlib.import_module(f"pipelines.stages.{name}")
        assert hasattr(module, "run") and hasattr(module, "main"), name


def test_deps_cover_the_import_closure_of_every_stage() -> None:
    # a library file a stage imports but does not depend on would leave its outputs
    # "up to date" after that file changes: the stale-model bug this test exists for
    for name, stage in STAGES.items():
        deps = stage_deps(stage)
        missing = sorted(
            str(path.relative_to(PROJECT.root))
            for path in closure(f"pipelines.stages.{name}")
            if path.stat().st_size and not covered(path, deps)  # empty __init__.py run nothing
        )
        assert not missing, f"stage {name} imports but does not depend on: {missing}"


def test_deps_name_only_code_the_stage_imports() -> None:
    # the converse: a dep on code the stage never runs makes it stale for nothing
    for name, stage in STAGES.items():
        imported = closure(f"pipelines.stages.{name}")
        for dep in stage_deps(stage):
            if dep.suffix != ".py" and not (
                dep.is_dir() and dep.is_relative_to(PROJECT.root / "pipelines")
            ):
                continue
            assert any(path == dep or dep in path.parents for path in imported), (name, dep)


def test_every_stage_depends_on_its_params_section() -> None:
    # a stage without a section of its own (features: nothing to tune) has none to declare
    sections = set(Params.model_fields)
    for name, stage in STAGES.items():
        declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        if name in sections:
            assert name in declared, name
        assert {d.split(".")[0] for d in declared} <= sections, (name, declared - sections)


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
        PROJECT.split_dir,
        PROJECT.features_dir,
        PROJECT.embeddings_dir,
        PROJECT.tune_dir,
        PROJECT.models_dir,
        PROJECT.eval_metrics,
        PROJECT.leaderboard_md,
        PROJECT.selection,
    ):
        assert str(path.relative_to(PROJECT.root)) in declared


def _plot_files(title: str) -> set[str]:
    plots = yaml.safe_load((PROJECT.root / "dvc.yaml").read_text())["plots"]
    (entry,) = [p[title] for p in plots if title in p]
    return set(entry["y"])


def test_the_plots_draw_one_series_per_tuned_and_per_gradient_model() -> None:
    from pipelines.core.config import load_params
    from pipelines.models import MODELS

    params = load_params(PROJECT.params)
    tuned = {name for name, budget in params.tune.trials.items() if budget > 0}
    assert _plot_files("tuning history") == {f"artifacts/tune/history/{name}.csv" for name in tuned}
    gradient = {name for name in params.train.models if MODELS[name].trainable}
    assert _plot_files("training curves") == {
        f"artifacts/models/{name}/curve.csv" for name in gradient
    }


def test_package_depends_on_the_service_code_the_bento_carries() -> None:
    # the Bento is built from services/ too: without it in the deps, a changed service
    # left the package stage "up to date" and the Bento served stale service code
    deps = stage_deps(STAGES["package"])
    for path in (PROJECT.root / "services").glob("*.py"):
        assert covered(path, deps), path
