"""The ASGI guard in front of every endpoint: auth, body limits, media type, clean errors.

- Bearer-token auth (``services.auth``: one header, constant-time compare) on everything
  but the probes, ``/metrics`` and the Swagger page with its schema: 401 without a valid
  token. With no token configured every guarded request is refused (fail closed).
- While the worker is not ready (model or MiniLM still loading) an API call gets 503
  with ``Retry-After`` at once, before its body is read.
- Bodies over ``max_body_bytes`` get 413 (declared length or counted bytes),
  a POST that is not ``application/json`` (any letter case) gets 415.
- Each API's body is validated here, with the API's own pydantic model, before
  BentoML sees it: a bad body gets 400 ``{"error", "detail"}`` naming a field only
  if it is one of the API's own fields, never a value or an unknown key the
  client sent, and nothing of it reaches a log (BentoML would log the input).
- Any other error response is reduced to ``{"error": message}`` (5xx: no detail); the
  headers a client needs (``Allow``, ``Retry-After``, ``WWW-Authenticate``) are kept.
- ``/docs.json`` is rewritten by ``services.openapi.contract`` so the schema says what
  the service really answers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from services.auth import authorised

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/", "/docs.json", "/schema.json"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/")
KEPT_HEADERS = frozenset({b"allow", b"retry-after", b"www-authenticate"})
RETRY_AFTER = b"5"  # seconds: a worker loads the model and MiniLM in about that


def _json_response(status: int, payload: dict[str, Any], extra: Iterable = ()) -> list[Message]:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": [*headers, *extra]},
        {"type": "http.response.body", "body": body},
    ]


def problems(error: ValidationError, known_fields: frozenset[str]) -> list[dict[str, str]]:
    """Each validation problem as {field, problem}, with unknown keys and values withheld."""
    details = []
    for problem in error.errors(include_input=False, include_context=False, include_url=False):
        parts = [
            str(p) if isinstance(p, int) or p in known_fields else "<unknown field>"
            for p in problem.get("loc", ())
        ]
        details.append({"field": ".".join(parts) or "body", "problem": str(problem["msg"])})
    return details


def clean_error(status: int, body: bytes, known_fields: frozenset[str]) -> dict[str, Any]:
    """An error body that names only known fields and carries no client input."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    if isinstance(data, list):  # BentoML wraps some errors in a one-element list
        data = data[0] if data and isinstance(data[0], dict) else {}
    if not isinstance(data, dict):
        data = {}
    if status >= 500:
        return {"error": "internal error"}
    details = []
    for problem in data.get("detail") or []:
        if not isinstance(problem, dict):
            continue
        parts = [
            str(p) if isinstance(p, int) or p in known_fields else "<unknown field>"
            for p in problem.get("loc", ())
        ]
        details.append({"field": ".".join(parts) or "body", "problem": str(problem.get("msg"))})
    if details:
        return {"error": "invalid request", "detail": details}
    message = data.get("error") if isinstance(data.get("error"), str) else None
    if status == 400 and (not message or "validation error" in message):
        message = "invalid request"
    return {"error": message or "request refused"}


class Guard:
    """Pure ASGI middleware; ``token`` is read through a callable so it can change."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        token: Callable[[], str | None],
        max_body_bytes: int,
        known_fields: frozenset[str],
        schemas: dict[str, type[BaseModel]] | None = None,
        ready: Callable[[], bool] = lambda: True,
        openapi: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.schemas = schemas or {}
        self.max_body_bytes = max_body_bytes
        self.known_fields = known_fields
        self.ready = ready
        self.openapi = openapi

    def authorised(self, scope: Scope) -> bool:
        return authorised(scope.get("headers") or [], self.token())

    async def _refuse(self, send: Send, status: int, message: str, extra: Iterable = ()) -> None:
        for event in _json_response(status, {"error": message}, extra):
            await send(event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/docs.json" and self.openapi is not None:
            await self._schema(scope, receive, send)
            return
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not self.authorised(scope):
            await self._refuse(
                send, 401, "missing or invalid bearer token", [(b"www-authenticate", b"Bearer")]
            )
            return
        if not self.ready():
            await self._refuse(
                send, 503, "the model is still loading", [(b"retry-after", RETRY_AFTER)]
            )
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body = b""
        if scope.get("method") == "POST":
            media = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
            if media.lower() != b"application/json":
                await self._refuse(send, 415, "the body must be application/json")
                return
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body_bytes:
                    await self._refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
                    return
            schema = self.schemas.get(path)
            if schema is not None:
                try:
                    if not body.strip():
                        await self._refuse(send, 400, "a JSON body is required")
                        return
                    schema.model_validate_json(body)
                except ValidationError as error:
                    payload = {
                        "error": "invalid request",
                        "detail": problems(error, self.known_fields),
                    }
                    for event in _json_response(400, payload):
                        await send(event)
                    return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if scope.get("method") == "POST" and not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 200
        held: list[Message] = []

        async def clean(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status < 400:
                    await send(message)
                else:
                    held.append(message)
                return
            if status < 400:
                await send(message)
                return
            held.append(message)
            if not message.get("more_body", False):
                raw = b"".join(m.get("body", b"") for m in held[1:])
                cleaned = clean_error(status, raw, self.known_fields)
                kept = [
                    (name, value)
                    for name, value in held[0].get("headers", [])
                    if name.lower() in KEPT_HEADERS
                ]
                if status == 503 and not any(n.lower() == b"retry-after" for n, _ in kept):
                    kept.append((b"retry-after", RETRY_AFTER))
                for event in _json_response(status, cleaned, kept):
                    await send(event)

        await self.app(scope, replay if scope.get("method") == "POST" else receive, clean)

    async def _schema(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's OpenAPI document, made true by ``self.openapi``."""
        start: Message = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        if start.get("status") != 200 or self.openapi is None:
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})
            return
        body = json.dumps(self.openapi(json.loads(b"".join(chunks)))).encode()
        for event in _json_response(200, {}, ()):
            if event["type"] == "http.response.start":
                event["headers"] = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
            else:
                event["body"] = body
            await send(event)
