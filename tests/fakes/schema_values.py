"""A JSON value that satisfies a JSON Schema, generated deterministically: what the fake
providers answer when a request asks for structured output.

Covers what step schemas use: ``type`` (the first non-null of a list), ``properties``
(every one, required or not), ``required``, ``items``, ``minItems`` / ``maxItems``,
``enum``, ``const``, ``anyOf`` / ``oneOf`` (the first branch that is not ``null``),
``allOf`` (merged), local ``$ref``, string ``minLength`` / ``maxLength`` / common
``format``s, and number bounds. ``pattern`` is not honoured: a test that needs one answers
with ``answer_next``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["example_value"]

_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/fake",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}
_MAX_DEPTH = 24


def example_value(schema: Any, *, seed: str = "") -> Any:
    """A value ``schema`` accepts. String fields read ``"<field>: <seed>"`` (the fakes
    pass the prompt), so a reply still shows what it answered."""
    return _value(schema, schema, "value", seed, 0)


def _value(schema: Any, root: Any, name: str, seed: str, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return _string({}, name, seed)
    if isinstance(schema.get("$ref"), str):
        return _value(_resolve(root, schema["$ref"]), root, name, seed, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            chosen = next((b for b in branches if _type_of(b) != "null"), branches[0])
            return _value(chosen, root, name, seed, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return _value(_merged(schema), root, name, seed, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        value = {key: _value(sub, root, key, seed, depth + 1) for key, sub in properties.items()}
        for key in schema.get("required") or []:
            value.setdefault(key, _string({}, key, seed))
        return value
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        return [
            _value(items, root, f"{name} {index + 1}", seed, depth + 1) for index in range(count)
        ]
    if kind == "integer":
        return int(_number(schema, integer=True))
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name, seed)


def _type_of(schema: Any) -> str | None:
    if not isinstance(schema, Mapping):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema:
            return "array"
    return kind if isinstance(kind, str) else None


def _string(schema: Mapping[str, Any], name: str, seed: str) -> str:
    text = _FORMATS.get(str(schema.get("format")), f"{name}: {seed}" if seed else f"fake {name}")
    minimum = int(schema.get("minLength", 0))
    maximum = int(schema.get("maxLength", max(minimum, len(text))))
    return text.ljust(minimum, "x")[:maximum]


def _number(schema: Mapping[str, Any], *, integer: bool) -> float:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value = float(low) if low is not None else 1.0
    if high is not None and value > high:
        value = float(high)
    return float(math.ceil(value)) if integer else value


def _merged(schema: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _resolve(root: Any, pointer: str) -> Any:
    node = root
    for raw in pointer.removeprefix("#").strip("/").split("/") if pointer != "#" else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node.get(token, {})
    return node
