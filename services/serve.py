"""`make serve`: start the blessed champion Bento on localhost with the local bearer token.

The token is generated once into ``.secrets/serve.token`` (mode 0600, git-ignored)
and handed to the server through its environment. So is the key data/ was
pseudonymised with (``ingestion_key``): the key file, or, for the MovieLens demo,
the published demo key, so raw MovieLens ids (``{"user_id": "1"}``) reach the
user's own history instead of the popularity fallback. The live state (events,
added items) is the project's ``artifacts/serving/live.sqlite``.

    python -m services.serve [--port 3000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from pipelines.core.paths import PROJECT, Layout
from pipelines.data.privacy import (
    KEY_ENV,
    PUBLIC_DEMO_KEY,
    key_fingerprint,
    read_fingerprint,
)
from pipelines.data.snapshot import fingerprint_path

TOKEN_FILE = PROJECT.secrets / "serve.token"
BENTOML_HOME = PROJECT.bentoml_home


def local_token(path: Path = TOKEN_FILE) -> str:
    """The local bearer token, created on first use with mode 0600 in one step."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def ingestion_key(layout: Layout = PROJECT) -> bytes | None:
    """The key data/ was pseudonymised with, as its recorded fingerprint says: the
    public demo key (MovieLens), or the key file; None when neither matches."""
    recorded = read_fingerprint(fingerprint_path(layout.data))
    if recorded is None:
        return None
    if recorded == key_fingerprint(PUBLIC_DEMO_KEY):
        return PUBLIC_DEMO_KEY
    if layout.pseudonym_key.is_file():
        try:
            key = bytes.fromhex(layout.pseudonym_key.read_text().strip())
        except ValueError:
            return None
        if key_fingerprint(key) == recorded:
            return key
    return None


def server_env(token: str, layout: Layout = PROJECT) -> dict[str, str]:
    """The server's environment: the token, the ingestion key, the live state, one BLAS
    thread per worker (numpy reads these when it loads)."""
    env = {**os.environ, "RECOPS_API_TOKEN": token}
    env.setdefault("RECOPS_LIVE_STATE", str(layout.live_state))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    key = ingestion_key(layout)
    if key is not None and not env.get(KEY_ENV):
        env[KEY_ENV] = key.hex()
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_HOME", str(BENTOML_HOME))
    from pipelines.inference.release import champion

    current = champion()
    if current is None:
        print("no blessed model yet: run `make run` (the package stage releases one)")
        return 2
    token = local_token()
    env = server_env(token)
    if not env.get(KEY_ENV):
        print(
            "  note:    no ingestion key matches data/: send pseudonyms (u_...), raw ids fall back"
        )
    url = f"http://127.0.0.1:{args.port}"
    print(f"serving {current.bento} (model {current.model})")
    print(f"  URL:     {url}")
    print(f"  Swagger: {url}/")
    print(f"  token:   {token}   (from {TOKEN_FILE.relative_to(PROJECT.root)})")
    print(
        f'  try:     curl -H "Authorization: Bearer $(cat {TOKEN_FILE.relative_to(PROJECT.root)})" '
        f"{url}/model"
    )
    sys.stdout.flush()
    bentoml = Path(sys.executable).parent / "bentoml"
    command = [
        str(bentoml),
        "serve",
        current.bento,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
