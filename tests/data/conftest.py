"""Fixtures for the data-layer tests: a fixed key, and the ingest command run in tmp_path."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from pipelines.data.privacy import KEY_ENV

KEY_HEX = "5e" * 32


@pytest.fixture
def key_env(monkeypatch) -> bytes:
    """$RECOPS_PSEUDONYM_KEY set to a fixed key, so no key file is created."""
    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    return bytes.fromhex(KEY_HEX)


@pytest.fixture
def no_key_env(monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def run_ingest(tmp_path, capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `python -m pipelines.stages.ingest` in-process on a params dict written to
    tmp_path/params.yaml, with data/ and quarantine/ in tmp_path; returns (code, out, err)."""
    from pipelines.stages.ingest import main

    def run(ingest_params: dict | None, *extra: str) -> tuple[int, str, str]:
        params = tmp_path / "params.yaml"
        if ingest_params is not None:
            params.write_text(yaml.safe_dump({"ingest": ingest_params}))
        capsys.readouterr()
        code = main(
            [
                "--params",
                str(params),
                "--data-dir",
                str(tmp_path / "data"),
                "--quarantine-dir",
                str(tmp_path / "quarantine"),
                *extra,
            ]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return run
