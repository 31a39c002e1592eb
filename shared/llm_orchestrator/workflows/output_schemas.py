"""The JSON Schema an ``llm`` step's reply must match: the step's own ``output_schema``, or
one derived from its output names, and the create-time checks of a user's schema.

Which steps ask for structured output:

- ``output_schema`` set: the reply is a JSON object matching it. With one output name (or
  none: the name ``text``) that name takes the whole object; with several, each name takes
  the field of the same name, and every name must be one of the schema's ``properties``.
- no ``output_schema`` and several output names: the schema is derived, an object with
  exactly those names as required **string** properties (strings are what every provider's
  native mechanism supports for free-form fields; a step wanting numbers, lists or nested
  objects states its own ``output_schema``).
- otherwise (one output name, or none): plain text, as always.

``jsonschema`` is imported only when a schema is checked, never at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "KNOWN_DIALECTS",
    "MAX_OUTPUT_SCHEMA_CHARS",
    "MAX_OUTPUT_SCHEMA_DEPTH",
    "derived_schema",
    "effective_schema",
    "output_schema_errors",
    "strict_compatible",
]

MAX_OUTPUT_SCHEMA_CHARS = 32_768
"""Size of ``output_schema`` as compact JSON: it travels with every call of the step."""
MAX_OUTPUT_SCHEMA_DEPTH = 32
"""Nesting of JSON objects and arrays in ``output_schema`` (the document, not the reply)."""

KNOWN_DIALECTS = frozenset(
    {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-04/schema",
    }
)
"""``$schema`` values accepted (with or without a trailing ``#``); none means 2020-12."""

STRICT_MAX_PROPERTIES = 5000
STRICT_MAX_NESTING = 10
"""OpenAI's limits for a strict schema: object properties in total, levels of nesting."""
_STRICT_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "definitions",
        "$ref",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "enum",
        "const",
        "pattern",
        "format",
        "multipleOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)
"""The keywords OpenAI's strict mode supports; any other makes a schema non-strict."""
_POINTER = re.compile(r"^#(?:/.*)?$")


def derived_schema(names: Sequence[str]) -> dict[str, Any]:
    """The schema of a step with several output names and no ``output_schema``."""
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
        "additionalProperties": False,
    }


def effective_schema(
    output_schema: Mapping[str, Any] | None, names: Sequence[str]
) -> Mapping[str, Any] | None:
    """What the step's reply must match, or None for a plain-text step."""
    if output_schema is not None:
        return output_schema
    if len(names) > 1:
        return derived_schema(names)
    return None


def strict_compatible(schema: Mapping[str, Any]) -> bool:
    """Whether OpenAI's strict mode accepts ``schema`` as it is: every object closed
    (``additionalProperties: false``) with every property required, only supported
    keywords, within its size limits. We never rewrite a user's schema to make it so:
    that would change what it accepts."""
    properties = 0
    for subschema, nesting in _subschemas(schema, 0):
        if not set(subschema) <= _STRICT_KEYWORDS or nesting > STRICT_MAX_NESTING:
            return False
        kinds = subschema.get("type")
        is_object = kinds == "object" or (isinstance(kinds, list) and "object" in kinds)
        if is_object or "properties" in subschema:
            own = subschema.get("properties") or {}
            if subschema.get("additionalProperties") is not False:
                return False
            if not isinstance(own, Mapping) or sorted(subschema.get("required") or []) != sorted(
                own
            ):
                return False
            properties += len(own)
    return properties <= STRICT_MAX_PROPERTIES


def _subschemas(schema: Any, nesting: int) -> Iterator[tuple[Mapping[str, Any], int]]:
    """Every schema object in ``schema`` (itself included), with its object nesting."""
    if not isinstance(schema, Mapping):
        return
    yield schema, nesting
    for key in ("properties", "$defs", "definitions"):
        children = schema.get(key)
        if isinstance(children, Mapping):
            deeper = nesting + 1 if key == "properties" else nesting
            for child in children.values():
                yield from _subschemas(child, deeper)
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):
        yield from _subschemas(schema.get(key), nesting)
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        children = schema.get(key)
        if isinstance(children, list):
            for child in children:
                yield from _subschemas(child, nesting)


# --- create-time checks ------------------------------------------------------------------


def output_schema_errors(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(path inside output_schema, message)`` for each reason to refuse ``schema``;
    an empty path is the schema itself. Bounds first, so nothing big or deep is walked."""
    if _depth(schema) > MAX_OUTPUT_SCHEMA_DEPTH:
        return [("", f"nested more than {MAX_OUTPUT_SCHEMA_DEPTH} levels deep")]
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > MAX_OUTPUT_SCHEMA_CHARS:
        return [("", f"at most {MAX_OUTPUT_SCHEMA_CHARS} characters as JSON, got {size}")]
    errors: list[tuple[str, str]] = []
    if schema.get("type") != "object":
        errors.append(
            (
                "type",
                "must be 'object': the reply is a JSON object whose fields the output names take",
            )
        )
    dialect = schema.get("$schema")
    if dialect is not None and (
        not isinstance(dialect, str) or dialect.rstrip("#") not in KNOWN_DIALECTS
    ):
        errors.append(
            (
                "$schema",
                "unknown JSON Schema dialect; use one of "
                + ", ".join(sorted(KNOWN_DIALECTS))
                + " (or leave it out for 2020-12)",
            )
        )
        return errors
    errors.extend(_metaschema_errors(schema))
    if not errors:
        errors.extend(_reference_errors(schema, schema, ""))
    return errors


def _metaschema_errors(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    from jsonschema.exceptions import best_match
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    problem = best_match(cls(cls.META_SCHEMA).iter_errors(schema))
    if problem is None:
        return []
    path = _path(problem.absolute_path)
    return [(path, _bounded(f"not a valid JSON Schema: {problem.message}"))]


def _reference_errors(root: Mapping[str, Any], node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Only references into the schema itself (``#`` or ``#/a/b``) that resolve: nothing is
    ever fetched from elsewhere."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "$ref" and isinstance(value, str):
                if not _POINTER.match(value):
                    yield where, "only references inside the schema ('#/$defs/...') are allowed"
                elif not _resolves(root, value):
                    yield where, f"{value!r} points at nothing in the schema"
            else:
                yield from _reference_errors(root, value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _reference_errors(root, item, f"{path}[{index}]")


def _resolves(root: Mapping[str, Any], pointer: str) -> bool:
    node: Any = root
    for raw in pointer[2:].split("/") if pointer != "#" else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return isinstance(node, Mapping | bool)


def _depth(value: Any) -> int:
    """Container nesting of a JSON value, iteratively (a hostile document cannot recurse)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_OUTPUT_SCHEMA_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _bounded(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
