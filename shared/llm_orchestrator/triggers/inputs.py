"""A trigger's ``inputs``: literal values, or paths into the event that fired it.

A top-level input whose value is a string starting with ``$.`` is a path into the event
(``"$.detail.text"``, ``"$.time"``, ``"$.detail-type"``); every other value is passed as it
is. A path the event does not have leaves that input out, so the workflow's own check
reports it missing (``last_error`` on the trigger).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from llm_orchestrator.errors import FieldError

MAX_INPUTS_BYTES = 256 * 1024
_PATH = re.compile(r"^\$(\.[A-Za-z0-9_-]+)+$")


def is_path(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$.")


def input_errors(inputs: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(json.dumps(inputs, separators=(",", ":"))) > MAX_INPUTS_BYTES:
        errors.append(FieldError("inputs", f"must be at most {MAX_INPUTS_BYTES} bytes as JSON"))
    for name, value in inputs.items():
        if is_path(value) and not _PATH.match(value):
            errors.append(
                FieldError(
                    f"inputs.{name}",
                    "a path is '$.' then dot-separated names (letters, digits, '_', '-'),"
                    " e.g. '$.detail.text'",
                )
            )
    return errors


def resolve_inputs(inputs: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in inputs.items():
        if not is_path(value):
            resolved[name] = value
            continue
        current: Any = event
        for segment in value[2:].split("."):
            if not isinstance(current, Mapping) or segment not in current:
                break
            current = current[segment]
        else:
            resolved[name] = current
    return resolved
