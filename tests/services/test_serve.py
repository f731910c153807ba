"""`make serve`: the MovieLens demo maps raw ids (issue 17.6), and the server's environment."""

from __future__ import annotations

from pathlib import Path

from pipelines.core.paths import Layout
from pipelines.data.privacy import KEY_ENV, PUBLIC_DEMO_KEY, pseudonymise_id, write_fingerprint
from pipelines.data.snapshot import fingerprint_path
from services.serve import ingestion_key, server_env


def test_the_demo_passes_the_public_key_so_raw_movielens_ids_work(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert ingestion_key(layout) is None  # nothing ingested yet
    write_fingerprint(fingerprint_path(layout.data), PUBLIC_DEMO_KEY)
    assert ingestion_key(layout) == PUBLIC_DEMO_KEY
    env = server_env("tok", layout)
    key = bytes.fromhex(env[KEY_ENV])
    assert pseudonymise_id("1", key) == pseudonymise_id("1", PUBLIC_DEMO_KEY)  # user "1" maps


def test_a_secret_key_is_passed_only_when_it_made_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    layout = Layout(tmp_path)
    secret = bytes(range(32))
    layout.secrets.mkdir()
    layout.pseudonym_key.write_text(secret.hex() + "\n")
    write_fingerprint(fingerprint_path(layout.data), secret)
    assert ingestion_key(layout) == secret
    write_fingerprint(fingerprint_path(layout.data), bytes(range(1, 33)))  # another key made data
    assert ingestion_key(layout) is None
    assert KEY_ENV not in server_env("tok", layout)


def test_the_server_gets_its_live_state_and_one_blas_thread(tmp_path: Path, monkeypatch) -> None:
    for name in ("RECOPS_LIVE_STATE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    env = server_env("tok", Layout(tmp_path))
    assert env["RECOPS_API_TOKEN"] == "tok"
    assert env["RECOPS_LIVE_STATE"] == str(tmp_path / "artifacts" / "serving" / "live.sqlite")
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
