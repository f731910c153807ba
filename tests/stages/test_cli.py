"""The shared stage command line: help that says what a stage reads and writes, one-line errors."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pipelines.stages import cli, select

READS = {"metrics": Path("/nowhere/metrics.json")}


def test_help_lists_what_each_stage_reads_and_writes(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        select.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "reads:" in text and "artifacts/eval/metrics.json" in text
    assert "writes:" in text and "artifacts/selection" in text
    assert "--params FILE" in text and "exit codes" in text


def test_bad_params_exit_2_with_the_key_named(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("select:\n  metric: accuracy\n")
    assert select.main(["--params", str(params)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "select.metric" in err and "Traceback" not in err


def test_an_unexpected_error_is_one_line_and_exit_3(tmp_path, capsys) -> None:
    def run(params, metrics: Path, out: Path) -> None:
        raise KeyError("boom")

    code = cli.main(
        "demo",
        "Demo.",
        run,
        READS,
        {"out": tmp_path / "out"},
        ["--params", str(tmp_path / "p.yaml")],
    )
    assert code in (cli.EXIT_BAD_INPUT, cli.EXIT_UNEXPECTED)  # p.yaml is missing: bad input
    (tmp_path / "p.yaml").write_text("seed: 1\n")
    code = cli.main(
        "demo",
        "Demo.",
        run,
        READS,
        {"out": tmp_path / "out"},
        ["--params", str(tmp_path / "p.yaml")],
    )
    assert code == cli.EXIT_UNEXPECTED
    err = capsys.readouterr().err
    assert "unexpected error: KeyError" in err and "--debug" in err and "Traceback" not in err
    assert "left as they were" in err and "dvc checkout" in err


def test_a_full_disk_names_the_output_and_the_free_space(tmp_path, capsys) -> None:
    def run(params, metrics: Path, out: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    params = tmp_path / "p.yaml"
    params.write_text("seed: 1\n")
    out = tmp_path / "models"
    assert cli.main("demo", "Demo.", run, READS, {"out": out}, ["--params", str(params)]) == 3
    err = capsys.readouterr().err
    assert "the disk is full" in err and str(out) in err and "MiB free" in err


def test_debug_shows_the_traceback(tmp_path) -> None:
    def run(params, metrics: Path, out: Path) -> None:
        raise KeyError("boom")

    params = tmp_path / "p.yaml"
    params.write_text("seed: 1\n")
    with pytest.raises(KeyError):
        cli.main(
            "demo", "Demo.", run, READS, {"out": tmp_path}, ["--params", str(params), "--debug"]
        )
