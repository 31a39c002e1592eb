"""Plain ``{{ name }}`` substitution for prompts, inputs, queries and filters.

Deliberately not an expression language: a placeholder is a variable name and nothing
else, so a definition can be validated statically and a template can never run code or
reach into objects. Text that merely looks like braces (``{{ a.b }}``, ``{{}}``) is not a
placeholder and is passed through untouched, because prompts legitimately quote code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TemplateError",
    "find_variables",
    "format_value",
    "render",
    "render_data",
    "render_value",
    "whole_variable",
]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{\{\s*(" + _NAME + r")\s*\}\}")
_WHOLE_PLACEHOLDER = re.compile(r"\s*\{\{\s*(" + _NAME + r")\s*\}\}\s*")

# Keys whose value is the readable body of a retrieved document, in order of preference.
_DOCUMENT_TEXT_KEYS = ("text", "content")


class TemplateError(ValueError):
    """A template refers to variables that have no value."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        names = ", ".join(f"'{name}'" for name in self.missing)
        plural = "s" if len(self.missing) > 1 else ""
        super().__init__(f"missing value for template variable{plural} {names}")

    @property
    def variable(self) -> str:
        """The first missing variable, for callers that report one name."""
        return self.missing[0]


def find_variables(text: str) -> list[str]:
    """Variable names in ``text``, each once, in order of first appearance."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text)))


def whole_variable(text: str) -> str | None:
    """The variable name when ``text`` is exactly one placeholder, else None."""
    whole = _WHOLE_PLACEHOLDER.fullmatch(text)
    return whole.group(1) if whole is not None else None


def render(text: str, values: Mapping[str, Any]) -> str:
    """Substitute every placeholder with its value formatted as text."""
    _require(find_variables(text), values)
    return _PLACEHOLDER.sub(lambda match: format_value(values[match.group(1)]), text)


def render_value(text: str, values: Mapping[str, Any]) -> Any:
    """Like :func:`render`, but a field that is exactly one placeholder yields the raw value.

    This is how ``"query": "{{query_embedding}}"`` hands a vector search the embedding
    list itself rather than its text rendering.
    """
    whole = _WHOLE_PLACEHOLDER.fullmatch(text)
    if whole is None:
        return render(text, values)
    name = whole.group(1)
    _require([name], values)
    return values[name]


def render_data(data: Any, values: Mapping[str, Any]) -> Any:
    """Render every string inside nested dicts and lists (a vector-search ``filter``)."""
    if isinstance(data, str):
        return render_value(data, values)
    if isinstance(data, Mapping):
        return {key: render_data(item, values) for key, item in data.items()}
    if isinstance(data, list):
        return [render_data(item, values) for item in data]
    return data


def format_value(value: Any) -> str:
    """The text a value contributes to a prompt.

    A list of documents reads best one per line, so retrieved chunks land in a prompt as
    paragraphs rather than as a JSON array; anything else is compact JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str | Mapping) for item in value):
        return "\n".join(_format_document(item) for item in value)
    return _compact_json(value)


def _format_document(item: str | Mapping[str, Any]) -> str:
    if isinstance(item, str):
        return item
    for source in (item, item.get("metadata")):
        if isinstance(source, Mapping):
            for key in _DOCUMENT_TEXT_KEYS:
                text = source.get(key)
                if isinstance(text, str):
                    return text
    return _compact_json(item)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _require(names: Sequence[str], values: Mapping[str, Any]) -> None:
    missing = [name for name in names if name not in values]
    if missing:
        raise TemplateError(missing)
