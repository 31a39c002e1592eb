"""What the served OpenAPI document says about request input beyond the models' schemas:
the rules ``api/storable.py`` enforces on every request, so that a client generated from
the document validates what the server validates.

- Text never contains NUL (``\\u0000``): every string parameter and body field without a
  pattern of its own gets ``STORABLE_TEXT``, and the keys of open objects too.
- Free-form values (execution inputs, event details, trigger inputs) are ``JsonValue``:
  any JSON whose strings and keys follow the same rule.
- Unpaired UTF-16 surrogates (``\\ud800``) are refused as well. JSON Schema cannot say it
  (its strings are Unicode scalar values already, and an escaped lone surrogate is not one:
  I-JSON, RFC 7493 §2.1), so the document's description says it instead.

Applied to the request side only (parameters, request bodies and the components they
use); responses are described as the models say.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JSON_VALUE", "STORABLE_TEXT", "describe_request_input"]

STORABLE_TEXT = "^[^\\u0000]*$"
"""Any text without the NUL character (an ECMA-262 and Python regular expression)."""
JSON_VALUE = "JsonValue"

INPUT_RULES = (
    "Every request is I-JSON (RFC 7493): UTF-8, no string or key with the NUL character "
    "or an unpaired UTF-16 surrogate, no number outside IEEE 754 doubles' finite range. "
    "Such a request is answered 400 validation_error naming the field; nothing is written."
)

_REF_PREFIX = "#/components/schemas/"
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})


def json_value_schema() -> dict[str, Any]:
    ref = {"$ref": _REF_PREFIX + JSON_VALUE}
    return {
        "description": "Any JSON value whose strings and object keys contain no NUL",
        "anyOf": [
            {"type": "string", "pattern": STORABLE_TEXT},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": ref},
            {
                "type": "object",
                "propertyNames": {"pattern": STORABLE_TEXT},
                "additionalProperties": ref,
            },
        ],
    }


def describe_request_input(
    document: dict[str, Any], extra_components: dict[str, dict[str, Any]] | None = None
) -> None:
    """Add the request-input rules to ``document`` in place (see the module's docstring)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(extra_components or {})
    components[JSON_VALUE] = json_value_schema()
    info = document.setdefault("info", {})
    info["description"] = f"{info.get('description', '')}\n\n{INPUT_RULES}".strip()
    walker = _Walker(components)
    walker.done.add(JSON_VALUE)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = walker.schema(parameter["schema"])
            body = operation.get("requestBody", {})
            for media in body.get("content", {}).values():
                if "schema" in media:
                    media["schema"] = walker.schema(media["schema"])


class _Walker:
    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        self.done: set[str] = set()

    def schema(self, schema: Any) -> Any:
        """``schema`` with the rules added; an open ``{}`` becomes ``JsonValue``."""
        if not isinstance(schema, dict):
            return schema
        if not (schema.keys() - _ANNOTATIONS):
            return {**schema, "$ref": _REF_PREFIX + JSON_VALUE}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            name = ref.removeprefix(_REF_PREFIX)
            if name not in self.done and name in self.components:
                self.done.add(name)
                self.components[name] = self.schema(self.components[name])
        if schema.get("type") == "string" and not (schema.keys() & {"pattern", "enum", "const"}):
            schema["pattern"] = STORABLE_TEXT
        properties = schema.get("properties", {})
        for name in properties:
            properties[name] = self.schema(properties[name])
        if schema.get("type") == "object":
            self._open_object(schema)
        for key in ("items", "if", "then", "else", "contains"):
            if key in schema:
                schema[key] = self.schema(schema[key])
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if key in schema:
                schema[key] = [self.schema(item) for item in schema[key]]
        return schema

    def _open_object(self, schema: dict[str, Any]) -> None:
        extra = schema.get("additionalProperties", True)
        if extra is False:
            return
        schema["additionalProperties"] = (
            {"$ref": _REF_PREFIX + JSON_VALUE} if extra is True else self.schema(extra)
        )
        schema.setdefault("propertyNames", {"pattern": STORABLE_TEXT})
