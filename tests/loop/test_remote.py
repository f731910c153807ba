"""The DVC remote between hosts: push what was trained, pull it where the disk is not shared.

A tiny real DVC project (data/ tracked by data.dvc, one stage writing artifacts/) pushes
to a local-folder remote; a second "host" (a fresh folder holding only what git would
carry: dvc.yaml, dvc.lock, data.dvc, .dvc/config) pulls and has the same bytes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.core.paths import PROJECT, Layout
from pipelines.loop import remote
from pipelines.loop.remote import DVC, RemoteError

STAGE = """stages:
  copy:
    cmd: mkdir -p artifacts && cp data/events.csv artifacts/copy.csv
    deps: [data]
    outs: [artifacts/copy.csv]
"""


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run([DVC, *args], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def project(root: Path, remote_dir: Path | None) -> Layout:
    root.mkdir(parents=True)
    dvc(root, "init", "--no-scm", "-q")
    if remote_dir is not None:
        dvc(root, "remote", "add", "-d", "shared", str(remote_dir))
    (root / "dvc.yaml").write_text(STAGE)
    return Layout(root)


@pytest.fixture
def trained(tmp_path) -> Layout:
    """A project that ingested (dvc add data) and trained (dvc repro), not yet pushed."""
    layout = project(tmp_path / "host1", tmp_path / "remote")
    layout.data.mkdir()
    (layout.data / "events.csv").write_text("user,item\n1,2\n")
    dvc(layout.root, "add", "-q", "data")
    dvc(layout.root, "repro", "-q")
    return layout


def second_host(tmp_path: Path, first: Layout) -> Layout:
    """What a clone on another host has: the DVC files git carries, no data, no cache."""
    layout = project(tmp_path / "host2", None)
    for name in ("dvc.yaml", "dvc.lock", "data.dvc"):
        shutil.copy2(first.root / name, layout.root / name)
    shutil.copy2(first.root / ".dvc" / "config", layout.root / ".dvc" / "config")
    return layout


def test_what_one_host_pushed_another_pulls(trained, tmp_path):
    pushed = remote.push(trained)
    assert pushed["remote"] == "shared" and Path(pushed["url"]) == tmp_path / "remote"
    other = second_host(tmp_path, trained)
    assert remote.missing(other) == ["data", "artifacts/copy.csv"]
    pulled = remote.pull(other)
    assert pulled["pulled"] == ["data", "artifacts/copy.csv"] and pulled["missing"] == []
    for path in ("data/events.csv", "artifacts/copy.csv"):
        assert (other.root / path).read_bytes() == (trained.root / path).read_bytes()
    # nothing stale: `dvc repro` on the second host runs no stage
    assert "didn't change" in dvc(other.root, "repro") or "up to date" in dvc(other.root, "status")
    assert remote.pull(other) == {"skipped": "every output is here already"}


def test_a_pull_leaves_an_output_that_is_here_alone(trained, tmp_path):
    remote.push(trained)
    other = second_host(tmp_path, trained)
    remote.pull(other)
    (other.root / "artifacts" / "copy.csv").write_text("a half-finished run's output\n")
    shutil.rmtree(other.data)
    pulled = remote.pull(other)
    assert pulled["pulled"] == ["data"]  # the missing one only: dvc repro decides the rest
    assert (other.root / "artifacts" / "copy.csv").read_text() == "a half-finished run's output\n"


def test_a_remote_can_be_chosen_by_name_and_an_unknown_one_is_a_clear_error(
    trained, tmp_path, monkeypatch
):
    dvc(trained.root, "remote", "add", "backup", str(tmp_path / "backup"))
    assert remote.push(trained, remote="backup")["remote"] == "backup"
    assert any((tmp_path / "backup").rglob("*"))
    monkeypatch.setenv(remote.REMOTE_ENV, "nowhere")
    with pytest.raises(RemoteError, match=r"no DVC remote 'nowhere' .*configured: backup, shared"):
        remote.push(trained)


def test_a_remote_that_fails_raises_one_line_from_dvc(trained, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    dvc(trained.root, "remote", "modify", "shared", "url", str(blocker / "remote"))
    with pytest.raises(RemoteError, match=r"^dvc push to shared \(.*\) failed: ") as caught:
        remote.push(trained)
    assert "\n" not in str(caught.value)


def test_without_a_remote_a_push_is_skipped_and_a_needed_pull_is_an_error(tmp_path):
    layout = project(tmp_path / "bare", None)
    layout.data.mkdir()
    (layout.data / "events.csv").write_text("user,item\n")
    dvc(layout.root, "add", "-q", "data")
    assert "names no DVC remote" in remote.push(layout)["skipped"]
    shutil.rmtree(layout.data)
    with pytest.raises(RemoteError, match=r"1 output\(s\) missing .* no DVC remote to pull"):
        remote.pull(layout)


def test_outside_a_dvc_project_both_do_nothing(tmp_path):
    layout = Layout(tmp_path)  # a DAG test's workspace: no dvc.yaml, no .dvc/
    assert "not a DVC project" in remote.push(layout)["skipped"]
    assert "not a DVC project" in remote.pull(layout)["skipped"]


def test_the_project_names_a_local_default_remote_under_its_cache():
    name, url = remote.remote_of(PROJECT)
    assert name == "local" and Path(url) == PROJECT.root / ".cache" / "dvc-remote"
