"""The bearer token: where it comes from, and how a request's header is checked.

- The token is ``$RECOPS_API_TOKEN``, else the first line of ``$RECOPS_API_TOKEN_FILE``
  (``make serve`` writes ``.secrets/serve.token``, mode 0600). Read on every call, so a
  rotated file takes effect without a restart; no token configured = every API refused.
- A request passes only with exactly one ``Authorization: Bearer <token>`` header whose
  token equals the configured one, compared in constant time over all its bytes. Two
  Authorization headers are refused (a proxy and the app could read different ones).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from pathlib import Path

TOKEN_ENV = "RECOPS_API_TOKEN"
TOKEN_FILE_ENV = "RECOPS_API_TOKEN_FILE"


def current_token() -> str | None:
    """The configured token, or None (then every guarded request gets 401)."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    path = os.environ.get(TOKEN_FILE_ENV)
    if path and Path(path).is_file():
        return Path(path).read_text().strip() or None
    return None


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the one ``Authorization: Bearer`` header; None if absent, repeated,
    or of another scheme."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, given = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return given.strip()


def authorised(headers: Iterable[tuple[bytes, bytes]], expected: str | None) -> bool:
    """True only for the configured token, compared in constant time."""
    given = bearer(headers)
    if not expected or given is None:
        return False
    return hmac.compare_digest(given, expected.encode())
