"""Structured output at run time: read a reply as JSON, check it against the step's schema,
and say precisely where it misses, for the corrective retry and for the step's error.

Which schema a step has, and the create-time checks, are in
:mod:`llm_orchestrator.workflows.output_schemas`; the calls, the one corrective retry and
the fallback chain in :mod:`llm_orchestrator.steps.calls`. ``jsonschema`` is imported on
the first structured step, never at import time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llm_orchestrator.providers import ChatResult

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ["Mismatch", "check_reply", "correction"]

MAX_QUOTED_CHARS = 200
"""How much of a reply or a value an error message quotes."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why a reply is not the JSON the schema asks for."""

    path: str
    """Where in the reply, as a JSON path (``$`` is the whole reply, ``$.items[2].name``)."""
    rule: str
    """The schema keyword that failed (``type``, ``required``, …), or ``json`` when the
    reply does not parse."""
    schema_path: str
    """Where that keyword is in the schema, as a JSON pointer (``#/properties/age/type``)."""
    message: str

    def describe(self) -> str:
        where = f" at '{self.schema_path}'" if self.schema_path else ""
        return f"at {self.path}: {self.message} (schema rule '{self.rule}'{where})"


def check_reply(schema: Mapping[str, Any], result: ChatResult) -> tuple[Any, Mismatch | None]:
    """``(value, None)`` when the reply is JSON matching ``schema``, else ``(None, why)``."""
    if result.structured is not None:
        value = result.structured
    else:
        if result.refusal:
            return None, Mismatch(
                "$", "refusal", "", f"the model refused: {_quoted(result.refusal)}"
            )
        try:
            value = json.loads(_unfenced(result.text))
        except ValueError as exc:
            why = (
                "it stopped at the max_tokens limit: raise the step's max_tokens"
                if result.cut_off
                else str(exc)
            )
            return None, Mismatch(
                "$", "json", "", f"the reply is not JSON ({why}): {_quoted(result.text)}"
            )
    return value, _mismatch(schema, value)


def correction(mismatch: Mismatch) -> str:
    """What the corrective retry tells the model after its reply."""
    return (
        "Your reply does not match the required JSON schema: "
        f"{mismatch.describe()}. Answer again with only a JSON object that matches the "
        "schema exactly."
    )


def _mismatch(schema: Mapping[str, Any], value: Any) -> Mismatch | None:
    from jsonschema.exceptions import best_match

    problem = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    if problem is None:
        return None
    pointer = "/".join(str(part) for part in problem.schema_path)
    return Mismatch(
        path=problem.json_path,
        rule=str(problem.validator),
        schema_path=f"#/{pointer}" if pointer else "#",
        message=_quoted(problem.message, MAX_QUOTED_CHARS * 2),
    )


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    """One validator per distinct schema (a step's schema is the same on every run)."""
    from jsonschema.validators import Draft202012Validator, validator_for

    schema = json.loads(schema_json)
    cls = validator_for(schema, default=Draft202012Validator)
    validator: Validator = cls(schema)
    return validator


def _unfenced(text: str) -> str:
    """Models asked for JSON outside a native mechanism like to fence it in markdown."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        start = stripped.find("{")
        if start >= 0:
            stripped = stripped[start:]
    return stripped


def _quoted(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
