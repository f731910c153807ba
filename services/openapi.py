"""The OpenAPI document made true: what each endpoint answers, and nothing else.

BentoML generates ``/docs.json`` from the service; ``contract`` rewrites it (the guard
serves the result), because the generated one was wrong in the ways schemathesis finds:
every error body is ``services.schemas.Error`` (``detail`` a list of field problems,
not a string), 401/413/415/503 come from the guard and were missing, 409 on ``/items``
was undocumented, a 404 was listed where none can happen, the token was not declared,
and the info block carried the whole README. "Exactly one of item_id and text" is in
the ``/similar`` body's ``oneOf`` (from ``SimilarRequest``).
"""

from __future__ import annotations

import copy
from typing import Any

from services.schemas import Error, Problem

DESCRIPTION = (
    "Recommendations from the blessed champion (design.md §8). Every API but the probes "
    "needs `Authorization: Bearer <token>` (`make serve` prints it)."
)
ERROR = {"$ref": "#/components/schemas/Error"}
# the statuses each API can answer besides 200, and what each means
COMMON = {
    "400": "invalid request: the fields at fault, never their values",
    "401": "missing or invalid bearer token",
    "413": "request body too large",
    "415": "the body must be application/json",
    "500": "internal error (never a traceback)",
    "503": "the model is still loading (see Retry-After)",
}
EXTRA = {
    "/similar": {"404": "unknown item_id"},
    "/events": {"404": "unknown item_id, or a raw user_id on a server without the key"},
    "/items": {"409": "item_id already exists"},
}
HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "503": {"Retry-After": {"schema": {"type": "string"}}},
}
TEXT = {"text/plain": {"schema": {"type": "string"}}}
PROBES = {
    "/livez": {"200": "alive"},
    "/healthz": {"200": "alive"},
    "/readyz": {"200": "model and MiniLM loaded", "503": "still loading"},
    "/metrics": {"200": "Prometheus text exposition"},
}
UNUSED = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")


def _error(description: str, status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR}},
    }
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response


def _nullable(schema: Any) -> None:
    """Mark every property that defaults to null as nullable (OpenAPI 3.0): the service
    accepts an explicit null there, and BentoML's schema had dropped it."""
    if isinstance(schema, dict):
        # a oneOf body (/similar) means "leave the other one out", never null
        properties = {} if "oneOf" in schema else (schema.get("properties") or {})
        for prop in properties.values():
            if isinstance(prop, dict) and "default" in prop and prop["default"] is None:
                prop["nullable"] = True
        for value in schema.values():
            _nullable(value)
    elif isinstance(schema, list):
        for value in schema:
            _nullable(value)


def contract(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (BentoML's OpenAPI document) with true responses, auth and no README."""
    spec = copy.deepcopy(spec)
    info = spec.get("info", {})
    spec["info"] = {"title": info.get("title", "recops"), "version": info.get("version", "1")}
    spec["info"]["description"] = DESCRIPTION
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in UNUSED:
        schemas.pop(name, None)
    schemas["Problem"] = Problem.model_json_schema()
    schemas["Error"] = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["Error"].pop("$defs", None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, methods in spec.get("paths", {}).items():
        for method, operation in methods.items():
            if path in PROBES:
                operation["responses"] = {
                    status: {"description": text, "content": TEXT}
                    for status, text in PROBES[path].items()
                }
                operation["security"] = []
                continue
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True  # an empty body is a 400
            ok = operation.get("responses", {}).get("200") or {"description": "OK"}
            statuses = {**COMMON, **EXTRA.get(path, {})}
            if method == "get":
                statuses = {s: statuses[s] for s in ("401", "500", "503")}
            operation["responses"] = {
                "200": ok,
                **{status: _error(text, status) for status, text in statuses.items()},
            }
            operation["security"] = [{"bearer": []}]
    _nullable(spec)
    return spec
