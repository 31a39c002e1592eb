"""What a finished provider call contributes to the execution: named outputs and usage."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llm_orchestrator.workflows.models import WorkflowDefinition, ancestors

UNNAMED_OUTPUT = "text"
"""Where a step that declares no ``output`` names keeps its result, so it is never lost."""


def text_outputs(names: Sequence[str], text: str) -> dict[str, Any]:
    """Map a completion onto the step's output names.

    One name takes the whole text. Several names ask the model for a JSON object with those
    keys; when the reply is one, each name takes its field, otherwise the first name takes
    the text and the others stay empty, so a chatty reply still reaches the next step.
    """
    if not names:
        return {UNNAMED_OUTPUT: text}
    if len(names) == 1:
        return {names[0]: text}
    parsed = _json_object(text)
    if parsed is not None and any(name in parsed for name in names):
        return {name: parsed.get(name) for name in names}
    return {name: (text if index == 0 else None) for index, name in enumerate(names)}


def value_outputs(names: Sequence[str], value: Any) -> dict[str, Any]:
    """An embedding or a search result: the first name takes it (others stay empty)."""
    if not names:
        return {UNNAMED_OUTPUT: value}
    return {name: (value if index == 0 else None) for index, name in enumerate(names)}


def template_values(
    definition: WorkflowDefinition,
    step_id: str,
    inputs: Mapping[str, Any],
    completed: Mapping[str, Mapping[str, Any]],
    ancestor_ids: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The values ``{{var}}`` may take in ``step_id``: the inputs, then its ancestors' outputs.

    Only ancestors count: a step that merely happened to finish earlier is not visible, which
    is exactly what validation promised when it accepted the definition.
    """
    visible = ancestors(definition)[step_id] if ancestor_ids is None else ancestor_ids
    values: dict[str, Any] = dict(inputs)
    for step in definition.steps:
        if step.id in visible and step.id in completed:
            values.update(completed[step.id])
    return values


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    # Models like to fence JSON in markdown; accept that one common wrapping.
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped[stripped.find("{") :] if "{" in stripped else stripped
    try:
        parsed = json.loads(stripped)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
