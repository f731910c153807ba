"""`make serve`: start the blessed champion Bento on localhost with the local bearer token.

The token is generated once into ``.secrets/serve.token`` (mode 0600, git-ignored)
and handed to the server through its environment; the ingestion key is passed
too when it exists, so raw user ids map to the stored pseudonyms.

    python -m services.serve [--port 3000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from pipelines.core.paths import PROJECT
from pipelines.data.privacy import KEY_ENV

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
    env = {**os.environ, "RECOPS_API_TOKEN": token}
    if PROJECT.pseudonym_key.exists() and not env.get(KEY_ENV):
        env[KEY_ENV] = PROJECT.pseudonym_key.read_text().strip()
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
