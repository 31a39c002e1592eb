"""What a finished provider call contributes to the execution: named outputs and usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llm_orchestrator.workflows.models import WorkflowDefinition, ancestors

UNNAMED_OUTPUT = "text"
"""Where a step that declares no ``output`` names keeps its result, so it is never lost."""


def text_outputs(names: Sequence[str], text: str) -> dict[str, Any]:
    """A plain-text completion: its one output name (or ``text``) takes the whole text.

    Steps with several output names no longer come here: they ask the provider for a JSON
    object natively and go through ``structured_outputs``.
    """
    if len(names) > 1:
        raise ValueError("a step with several output names has structured output")
    return {names[0] if names else UNNAMED_OUTPUT: text}


def structured_outputs(names: Sequence[str], value: Any, *, own_schema: bool) -> dict[str, Any]:
    """Map a reply that matched the step's schema onto its output names.

    With the step's own ``output_schema`` and one name (or none: ``text``), that name takes
    the whole object; with several names, each takes the field of the same name (None when
    the schema lets the reply leave it out).
    """
    if len(names) <= 1 and own_schema:
        return {names[0] if names else UNNAMED_OUTPUT: value}
    fields = value if isinstance(value, dict) else {}
    return {name: fields.get(name) for name in names}


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
