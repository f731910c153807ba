"""Atomic writes: a stage leaves a complete output or the old one, never half of one."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import io as io_module
from pipelines.core.io import replaced_dir, write_json


def test_replaced_dir_swaps_in_the_new_folder_whole(tmp_path) -> None:
    target = tmp_path / "models"
    (target / "old").mkdir(parents=True)
    with replaced_dir(target) as staging:
        (staging / "new.txt").write_text("fresh")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no staging left behind


def test_replaced_dir_keeps_the_old_folder_on_failure(tmp_path) -> None:
    target = tmp_path / "models"
    (target / "old").mkdir(parents=True)
    with pytest.raises(RuntimeError), replaced_dir(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("training crashed")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_write_json_leaves_the_old_file_when_serialising_fails(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    write_json({"ndcg": 0.1}, path)
    with pytest.raises(TypeError):
        write_json({"ndcg": object()}, path)
    assert path.read_text().strip().startswith("{")
    assert list(tmp_path.iterdir()) == [path]


def test_a_write_interrupted_midway_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    # the failure is injected inside the writer, after half the new bytes are on disk
    path = tmp_path / "metrics.json"
    write_json({"ndcg": 0.1}, path)
    before = path.read_bytes()

    class HalfThenFail:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError("disk full")

    monkeypatch.setattr(
        io_module,
        "open",
        lambda *a, **k: HalfThenFail(open(*a, **k)),  # noqa: SIM115
        raising=False,
    )
    with pytest.raises(OSError, match="disk full"):
        write_json({"ndcg": 0.2, "hr": 0.3}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_a_failed_swap_restores_the_previous_folder(tmp_path, monkeypatch) -> None:
    target = tmp_path / "models"
    (target / "old").mkdir(parents=True)
    real_rename = Path.rename

    def failing_rename(self: Path, destination):
        if self.name.startswith(io_module.STAGING_PREFIX):
            raise OSError("rename failed midway")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing_rename)
    failure = pytest.raises(io_module.PublishError, match="still holds the previous outputs")
    with failure, replaced_dir(target) as staging:
        (staging / "new").mkdir()
    monkeypatch.undo()
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_staging_folders_of_killed_runs_are_cleaned_at_the_next_start(tmp_path) -> None:
    stale = tmp_path / f"{io_module.STAGING_PREFIX}models.abc"
    stale.mkdir()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / f"{io_module.STAGING_PREFIX}models.def"  # may be a live run's
    fresh.mkdir()
    with replaced_dir(tmp_path / "models") as staging:
        (staging / "x").write_text("x")
    assert not stale.exists()
    assert fresh.exists()


def test_nothing_is_published_once_the_owner_is_gone(tmp_path) -> None:
    target = tmp_path / "models"
    (target / "old").mkdir(parents=True)
    io_module.set_publish_guard(lambda: False)
    try:
        failure = pytest.raises(io_module.PublishError, match="newer run owns")
        with failure, replaced_dir(target) as staging:
            (staging / "new").mkdir()
    finally:
        io_module.set_publish_guard(lambda: True)
    assert [p.name for p in target.iterdir()] == ["old"]


def test_a_file_damaged_in_place_is_caught_on_load(tmp_path) -> None:
    # same size, same time stamp: DVC's cheap check passes, the recorded digest does not
    from pipelines.models import build_model, load_model

    model = build_model("ease", 4, {"l2": 5.0})
    model.save(tmp_path / "ease")
    assert load_model(tmp_path / "ease").n_items == 4
    state = tmp_path / "ease" / "state.pt"
    stat = state.stat()
    data = bytearray(state.read_bytes())
    data[-20] ^= 0xFF
    state.write_bytes(bytes(data))
    os.utime(state, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    message = (
        "is damaged: its content no longer matches the checksum recorded when it was "
        "written. Restore it with `dvc checkout` (or re-run `dvc repro --force` for the "
        "stage that writes it)."
    )
    with pytest.raises(io_module.CorruptOutputError, match=re.escape(message) + "$"):
        load_model(tmp_path / "ease")


def test_json_is_written_in_one_stable_layout(tmp_path) -> None:
    # indented, keys sorted, one trailing newline: the same payload gives the same bytes,
    # so DVC hashes and git diffs of metrics change only when a value does
    path = tmp_path / "metrics.json"
    write_json({"b": 1, "a": [1, 2], "é": "ü"}, path)
    assert path.read_bytes() == (
        b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1,\n  "\\u00e9": "\\u00fc"\n}\n'
    )
    io_module.write_text("ü\n", tmp_path / "note.txt")
    assert (tmp_path / "note.txt").read_bytes() == "ü\n".encode()


def test_parquet_and_npy_writers_round_trip_and_keep_the_old_file_on_failure(
    tmp_path,
) -> None:
    frame = pd.DataFrame({"user_idx": [0, 1], "score": [0.5, 0.25]})
    table = tmp_path / "out" / "table.parquet"
    io_module.write_parquet(frame, table)
    pd.testing.assert_frame_equal(pd.read_parquet(table), frame)
    with pytest.raises(ValueError):  # pyarrow refuses an object column of mixed types
        io_module.write_parquet(pd.DataFrame({"x": [1, "a"]}), table)
    pd.testing.assert_frame_equal(pd.read_parquet(table), frame)
    vectors = tmp_path / "deeper" / "items.npy"
    io_module.write_npy(np.arange(6, dtype=np.float32).reshape(2, 3), vectors)
    assert np.array_equal(np.load(vectors), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table.parquet"]


def test_a_first_publish_that_fails_leaves_nothing(tmp_path, monkeypatch) -> None:
    # no previous folder to put back: the error says so and no half folder appears
    target = tmp_path / "models"
    real_rename = Path.rename

    def failing_rename(self: Path, destination):
        if self.name.startswith(io_module.STAGING_PREFIX):
            raise OSError("rename failed")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing_rename)
    failure = pytest.raises(io_module.PublishError, match="could not move the new models")
    with failure, replaced_dir(target) as staging:
        (staging / "new").mkdir()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_parquet_files_hold_no_index_column(tmp_path) -> None:
    frame = pd.DataFrame({"item_idx": [3, 4]}, index=[5, 9])  # a filtered frame's index
    io_module.write_parquet(frame, tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert list(back.columns) == ["item_idx"] and back.index.tolist() == [0, 1]


LOCKED = "undeletable"


def lock_files_named_undeletable(monkeypatch) -> None:
    """Files named ``LOCKED`` cannot be deleted (as root, permissions would not stop it)."""
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == LOCKED:
            raise PermissionError(f"cannot delete {path}")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


def test_leftovers_that_cannot_be_deleted_do_not_stop_a_publish(
    tmp_path, monkeypatch, caplog
) -> None:
    stale = tmp_path / f"{io_module.STAGING_PREFIX}models.old"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / LOCKED).write_text("x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    lock_files_named_undeletable(monkeypatch)
    with pytest.raises(PermissionError):  # the lock holds
        shutil.rmtree(stale)
    logged = caplog.at_level(logging.INFO, logger="pipelines.core.io")
    with logged, replaced_dir(tmp_path / "models") as staging:
        (staging / "new.txt").write_text("fresh")
    assert (tmp_path / "models" / "new.txt").read_text() == "fresh"
    assert [r.getMessage() for r in caplog.records] == [
        f"removing {stale}, left by an interrupted run"
    ]


def test_an_old_folder_that_cannot_be_deleted_does_not_undo_the_swap(tmp_path, monkeypatch) -> None:
    target = tmp_path / "models"
    target.mkdir()
    (target / LOCKED).write_text("old")
    lock_files_named_undeletable(monkeypatch)
    with replaced_dir(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_a_retired_folder_left_by_a_killed_swap_is_replaced(tmp_path) -> None:
    # a run killed between its two renames leaves .retired-<name>.<pid>; a later run with
    # the same pid must still be able to move the current folder aside
    target = tmp_path / "models"
    target.mkdir()
    left = tmp_path / f"{io_module.RETIRED_PREFIX}models.{os.getpid()}"
    (left / "stale").mkdir(parents=True)
    with replaced_dir(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not left.exists()


def test_a_staging_folder_exactly_at_the_age_limit_is_kept(tmp_path, monkeypatch) -> None:
    # older than STALE_AFTER_SECONDS goes; exactly that old may still be a live run's
    folder = tmp_path / f"{io_module.STAGING_PREFIX}models.live"
    folder.mkdir()
    mtime = folder.stat().st_mtime
    monkeypatch.setattr(io_module.time, "time", lambda: mtime + io_module.STALE_AFTER_SECONDS)
    io_module.remove_stale_staging(tmp_path, "models")
    assert folder.exists()
    monkeypatch.setattr(io_module.time, "time", lambda: mtime + 61)
    io_module.remove_stale_staging(tmp_path, "models")
    assert not folder.exists()


def test_paths_inside_the_project_are_recorded_relative_to_it(tmp_path) -> None:
    from pipelines.core.paths import Layout

    layout = Layout(tmp_path / "clone")
    assert layout.relative(tmp_path / "clone" / "artifacts" / "tune") == "artifacts/tune"
    assert layout.relative(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    assert layout.relative("fitted") == "fitted"  # not a path: as given


def test_dvc_files_are_read_and_their_md5_found(tmp_path) -> None:
    from pipelines.core.io import read_dvc_file, tracked_md5

    dvc_file = tmp_path / "data.dvc"
    dvc_file.write_text("outs:\n- md5: abc.dir\n  path: data\n")
    assert read_dvc_file(dvc_file)["outs"][0]["path"] == "data"
    assert tracked_md5(dvc_file) == "abc.dir"
    assert read_dvc_file(tmp_path / "absent.dvc") == {} and tracked_md5(tmp_path / "x") is None
