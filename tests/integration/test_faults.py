"""Faults an operator will meet: `dvc repro` killed mid-stage, a stage that fails.

On a scratch repo with synthetic data and small budgets, SIGKILL hits `dvc repro`
while `train` (then `tune`) runs. Nothing may outlive it, the next `dvc repro`
must resume (finished trials and models are not redone) and end with the outputs
an uninterrupted run gives, and `dvc status` must be clean.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.core.paths import PROJECT
from tests.integration.test_dvc_pipeline import run, synthetic_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SMALL = """
train:
  models: [ease, sasrec]
  ease: {l2: 50.0}
  sasrec:
    hidden: 32
    layers: 1
    heads: 1
    max_len: 20
    trainer: {epochs: 40, patience: 40, batch_size: 16}
tune:
  trials: {ease: 3, sasrec: 3}
  spaces:
    ease:
      model: {l2: {type: float, low: 1, high: 500, log: true}}
    sasrec:
      model: {dropout: {type: float, low: 0.1, high: 0.4}}
  pruner_warmup: 100
coldstart:
  models: [ease]
"""


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both else value
    return out


def small_params(tune_sasrec: bool) -> str:
    """The shipped params.yaml (DVC needs every section) with small budgets over it.

    With ``tune_sasrec`` false, SASRec has no study, so the train stage fits it itself
    (a tuned model's fit is reused from its best trial and never trains in `train`).
    """
    overlay = yaml.safe_load(SMALL)
    if not tune_sasrec:
        overlay["tune"]["trials"].pop("sasrec")
        overlay["tune"]["spaces"].pop("sasrec")
    params = merged(yaml.safe_load((PROJECT.root / "params.yaml").read_text()), overlay)
    params["tune"]["trials"] = overlay["tune"]["trials"]  # only these models are tuned
    params["tune"]["spaces"] = overlay["tune"]["spaces"]
    return yaml.safe_dump(params, sort_keys=False)


def make_repo(root: Path, tune_sasrec: bool) -> Path:
    for name in ("pipelines", "services", "dvc.yaml", ".dvcignore"):
        source = PROJECT.root / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    (root / "params.yaml").write_text(small_params(tune_sasrec))
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], root)
    run([*dvc, "init", "-q"], root)
    run([*dvc, "config", "core.analytics", "false"], root)
    synthetic_snapshot(root / "data", n_users=120, n_items=40)
    run([*dvc, "add", "-q", "data"], root)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The same repos, each run once without interruption (built on first use)."""
    built: dict[bool, Path] = {}

    class Lazy(dict):
        def __missing__(self, tune_sasrec: bool) -> Path:
            root = make_repo(tmp_path_factory.mktemp("reference"), tune_sasrec)
            run([sys.executable, "-m", "dvc", "repro"], root)
            self[tune_sasrec] = root
            return root

    return Lazy(built)


def stage_processes(root: Path) -> list[int]:
    """Pids of stage processes whose working directory is ``root``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if Path(cwd) == root and "pipelines.stages." in cmdline:
            found.append(int(proc.name))
    return found


def kill_repro_when(root: Path, ready, timeout: float = 300) -> None:
    """Start `dvc repro`, SIGKILL it (the dvc process only) once ``ready()`` holds."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # no $SHELL: DVC then runs stages through /bin/sh, which (as dash) does not exec a
    # lone command by itself; the stage must still die with `dvc repro`
    env.pop("SHELL", None)
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert repro.poll() is None, "dvc repro ended before the fault could be injected"
            assert time.monotonic() < deadline, "the fault point was never reached"
            time.sleep(0.05)
    finally:
        repro.kill()
        repro.wait()


def assert_no_orphans(root: Path) -> None:
    deadline = time.monotonic() + 20
    while stage_processes(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = stage_processes(root)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "a stage outlived the dvc repro that started it"


def same_models(root: Path, reference: Path) -> None:
    for name in ("ease", "sasrec"):
        ours = torch.load(root / "artifacts/models" / name / "state.pt", weights_only=True)
        theirs = torch.load(reference / "artifacts/models" / name / "state.pt", weights_only=True)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (name, key)


def best_values(root: Path) -> dict:
    best = json.loads((root / "artifacts/tune/best.json").read_text())
    return {model: (e["model"], e["trainer"], e["value"]) for model, e in best.items()}


def test_killed_during_train_resumes_and_matches(tmp_path: Path, references: dict) -> None:
    reference = references[False]
    root = make_repo(tmp_path, tune_sasrec=False)
    checkpoint = root / ".cache/checkpoints/sasrec/checkpoint.pt"
    kill_repro_when(root, checkpoint.exists)
    assert_no_orphans(root)
    assert not (root / "artifacts/models").exists()  # the killed run published nothing
    output = run([sys.executable, "-m", "dvc", "repro"], root)
    assert "resumed from" in output  # the trainer picked its checkpoint up
    assert "Running stage 'tune'" not in output  # tune had finished: not redone
    same_models(root, reference)
    assert best_values(root) == best_values(reference)
    assert not list((root / ".cache/checkpoints").glob("*/checkpoint.pt"))  # dropped once published
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], root)


def test_killed_during_tune_resumes_and_matches(tmp_path: Path, references: dict) -> None:
    reference = references[True]
    root = make_repo(tmp_path, tune_sasrec=True)

    def a_sasrec_trial_finished() -> bool:
        for db in (root / ".cache/tune").glob("sasrec-*.db"):
            try:
                with sqlite3.connect(db) as con:
                    done = con.execute("select count(*) from trials where state = 'COMPLETE'")
                    if done.fetchone()[0] >= 1:
                        return True
            except sqlite3.Error:
                pass
        return False

    kill_repro_when(root, a_sasrec_trial_finished)
    assert_no_orphans(root)
    output = run([sys.executable, "-m", "dvc", "repro"], root)
    assert "sasrec: resuming a study with" in output
    assert best_values(root) == best_values(reference)
    same_models(root, reference)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], root)


def test_a_failing_stage_leaves_the_previous_outputs_and_says_so(
    references: dict, tmp_path: Path
) -> None:
    reference = references[True]
    root = tmp_path / "repo"
    shutil.copytree(reference, root, symlinks=True)
    before = (root / "artifacts/selection/selection.json").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["select"]["metric"] = "accuracy"  # select re-runs, and fails on it
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "select"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "left as they were" in done.stderr + done.stdout
    assert (root / "artifacts/selection/selection.json").read_bytes() == before
