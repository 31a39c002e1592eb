"""Reject request values that JSON and Python accept but PostgreSQL cannot store.

Every string the API receives may end up in a ``text`` or ``jsonb`` column (a name, an
input, an audit filter, the failed login's username in the audit trail). PostgreSQL refuses
three things that a JSON parser lets through: the NUL character (``\\u0000``), a lone UTF-16
surrogate (``\\ud800``) and the non-finite numbers (``NaN``, ``Infinity``, ``1e400``).
Checked once, for every route, before any handler runs: such a request gets a 400 that names
the field, and nothing (not even half an operation or its audit event) is written.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from llm_orchestrator.errors import FieldError, ValidationFailed

# A hostile body could hold a million bad strings; a few named fields make the point.
MAX_REPORTED = 20

_NUL = "Must not contain the NUL character (\\u0000)"
_SURROGATE = "Must not contain an unpaired UTF-16 surrogate"
_KEY_NUL = "Must not contain a key with the NUL character (\\u0000)"
_KEY_SURROGATE = "Must not contain a key with an unpaired UTF-16 surrogate"
_NOT_FINITE = "Must be a finite number"


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return _NUL
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def unstorable_values(value: Any, path: str = "") -> list[FieldError]:
    """The fields of a parsed JSON document that PostgreSQL would refuse, as ``errors``.

    Paths follow the validation errors' style (``steps[1].prompt``, ``inputs.text``).
    Iterative, not recursive: a body nested as deep as the JSON parser allows must not
    overflow the stack here.
    """
    errors: list[FieldError] = []
    pending: list[tuple[str, Any]] = [(path, value)]
    while pending and len(errors) < MAX_REPORTED:
        where, item = pending.pop()
        if isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                errors.append(FieldError(where or "body", problem))
        elif isinstance(item, float):
            if not math.isfinite(item):
                errors.append(FieldError(where or "body", _NOT_FINITE))
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                key_problem = _string_problem(key)
                if key_problem:
                    message = _KEY_NUL if key_problem == _NUL else _KEY_SURROGATE
                    errors.append(FieldError(where or "body", message))
                    continue
                pending.append((_join(where, key), child))
        elif isinstance(item, list):
            pending.extend((_join(where, i), child) for i, child in reversed(list(enumerate(item))))
    return errors[:MAX_REPORTED]


async def _json_body(request: Request) -> Any:
    """The parsed JSON body, or None when there is none to check.

    FastAPI has already read and parsed the body of a route that takes one (``request.json()``
    returns that cached parse). A body it did not parse as JSON (another content type, or a
    route without a body) is either refused by the route's own validation or ignored by it,
    so a body that does not parse here is no business of this check.
    """
    if request.method not in ("POST", "PUT", "PATCH") or not await request.body():
        return None
    try:
        return await request.json()
    except (ValueError, RecursionError):
        return None


def _json_encoding_problem(request: Request, body: bytes) -> str | None:
    """JSON bodies are UTF-8 (RFC 8259 §8.1): Python's JSON parser would also guess UTF-16
    and UTF-32 from the bytes, and a charset parameter naming another encoding is a lie."""
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"JSON bodies must be UTF-8, not {value.strip()[:40]!r}"
    # NUL bytes are valid UTF-8, so UTF-16/32 text of ASCII decodes as UTF-8: ask the
    # parser's own guess, which is what would otherwise decide.
    if json.detect_encoding(body) not in ("utf-8", "utf-8-sig"):
        return "JSON bodies must be UTF-8"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "JSON bodies must be UTF-8"
    return None


async def reject_unstorable_input(request: Request) -> None:
    """App-wide dependency: the JSON body's encoding, path parameters, query parameters and
    the JSON body's values."""
    if request.method in ("POST", "PUT", "PATCH") and (body := await request.body()):
        if problem := _json_encoding_problem(request, body):
            raise ValidationFailed("Request validation failed", [FieldError("body", problem)])
    errors = [
        FieldError(name, problem)
        for name, value in request.path_params.items()
        if isinstance(value, str) and (problem := _string_problem(value))
    ]
    for name, value in request.query_params.multi_items():
        if problem := _string_problem(value):
            errors.append(FieldError(name, problem))
        elif problem := _string_problem(name):
            errors.append(FieldError("query", problem))
    errors.extend(unstorable_values(await _json_body(request)))
    if errors:
        raise ValidationFailed("Request validation failed", errors[:MAX_REPORTED])
