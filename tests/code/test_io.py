"""Atomic writes: a stage leaves a complete output or the old one, never half of one."""

from __future__ import annotations

import pytest

from pipelines.io import replaced_dir, write_json


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
