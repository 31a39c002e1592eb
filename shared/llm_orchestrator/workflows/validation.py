"""Parse untrusted workflow definitions.

``parse_definition`` is the one entry point for definitions that arrive from outside: it
reports every problem it can find in one ``ValidationFailed``, with field paths in the
request body's own terms (``steps[1].depends_on[0]``), so a client fixes everything in
one round trip. The graph rules run even when some fields are malformed, on whatever
ids and references can be read, so that a bad ``provider`` does not hide a cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from llm_orchestrator.errors import FieldError, ValidationFailed
from llm_orchestrator.workflows.models import (
    EMBEDDING_DIMENSIONS,
    EMBEDDING_PROVIDERS,
    LLM_PROVIDERS,
    MAX_STEPS,
    OUTPUT_NAME_PATTERN,
    STEP_ID_PATTERN,
    STEP_TYPES,
    AnyStep,
    EmbedFallback,
    EmbedStep,
    LlmFallback,
    LlmStep,
    WorkflowDefinition,
    ancestor_masks,
    iter_data_templates,
)
from llm_orchestrator.workflows.output_schemas import output_schema_errors
from llm_orchestrator.workflows.templating import find_variables

__all__ = ["INVALID_DEFINITION", "RESERVED_STEP_IDS", "parse_definition"]

INVALID_DEFINITION = "Invalid workflow definition"

RESERVED_STEP_IDS = frozenset({"Done"})
"""State names the compiler uses for itself (the final Succeed state)."""

_ALLOWED_TYPES = ", ".join(f"'{name}'" for name in STEP_TYPES)
_PATTERN_MESSAGES = {
    STEP_ID_PATTERN: (
        "must start with a letter and contain only letters, digits, '-' and '_' "
        "(never two '_' in a row)"
    ),
    OUTPUT_NAME_PATTERN: (
        "must be a variable name: letters, digits and '_', not starting with a digit"
    ),
}
_TEMPLATED_FIELDS = ("prompt", "system", "input", "query", "vectors", "documents", "namespace")


def parse_definition(data: Any) -> WorkflowDefinition:
    """Validate ``data`` (a decoded JSON object) into a definition.

    Raises ``ValidationFailed("Invalid workflow definition", errors)`` naming every problem.
    """
    errors: list[FieldError] = []
    definition: WorkflowDefinition | None = None
    try:
        definition = WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        errors.extend(_field_error(detail) for detail in exc.errors(include_url=False))
    raw = data.model_dump() if isinstance(data, WorkflowDefinition) else data
    errors.extend(_graph_errors(_read_shapes(raw)))
    if definition is not None:
        errors.extend(_capability_errors(definition))
    if errors or definition is None:
        raise ValidationFailed(INVALID_DEFINITION, _unique(errors))
    return definition


# --- what a provider cannot do ---------------------------------------------------------

ANTHROPIC_MAX_TEMPERATURE = 1.0
"""Anthropic's Messages API takes temperatures from 0 to 1 (OpenAI and Cohere go to 2)."""


def _capability_errors(definition: WorkflowDefinition) -> Iterator[FieldError]:
    """Settings a step's provider would refuse: refused here, at create time, instead."""
    for index, step in enumerate(definition.steps):
        yield from _fallback_errors(index, step)
        if isinstance(step, LlmStep) and step.output_schema is not None:
            yield from _output_schema_errors(index, step, step.output_schema)
        if (
            isinstance(step, LlmStep)
            and step.provider == "anthropic"
            and step.temperature is not None
            and step.temperature > ANTHROPIC_MAX_TEMPERATURE
        ):
            yield FieldError(
                f"steps[{index}].temperature",
                f"provider 'anthropic' takes a temperature from 0 to "
                f"{ANTHROPIC_MAX_TEMPERATURE:g}, got {step.temperature:g}",
            )
        if isinstance(step, EmbedStep) and step.input_type and step.provider != "cohere":
            yield FieldError(
                f"steps[{index}].input_type",
                f"input_type applies to provider 'cohere' only, not {step.provider!r}",
            )


def _fallback_errors(index: int, step: AnyStep) -> Iterator[FieldError]:
    """A fallback that repeats the primary, that Anthropic would refuse, or that embeds
    into another vector size than the primary (when both sizes are known)."""
    if not isinstance(step, LlmStep | EmbedStep) or not step.fallback:
        return
    seen = {(step.provider, step.model)}
    primary_size = EMBEDDING_DIMENSIONS.get((step.provider, step.model))
    entries: list[LlmFallback | EmbedFallback] = list(step.fallback)
    for position, entry in enumerate(entries):
        path = f"steps[{index}].fallback[{position}]"
        if (entry.provider, entry.model) in seen:
            yield FieldError(
                f"{path}.model",
                f"{entry.provider} {entry.model!r} is already earlier in the chain",
            )
        seen.add((entry.provider, entry.model))
        if isinstance(entry, LlmFallback) and isinstance(step, LlmStep):
            temperature = step.temperature if entry.temperature is None else entry.temperature
            if (
                entry.provider == "anthropic"
                and temperature is not None
                and temperature > ANTHROPIC_MAX_TEMPERATURE
            ):
                yield FieldError(
                    f"{path}.temperature",
                    f"provider 'anthropic' takes a temperature from 0 to "
                    f"{ANTHROPIC_MAX_TEMPERATURE:g}, got {temperature:g}"
                    + (" (the step's own)" if entry.temperature is None else ""),
                )
        size = EMBEDDING_DIMENSIONS.get((entry.provider, entry.model))
        if isinstance(step, EmbedStep) and primary_size and size and size != primary_size:
            yield FieldError(
                f"{path}.model",
                f"{entry.provider} {entry.model!r} embeds into {size} dimensions but "
                f"{step.provider} {step.model!r} into {primary_size}: a fallback must "
                "produce vectors of the same size",
            )


def _output_schema_errors(
    index: int, step: LlmStep, schema: dict[str, Any]
) -> Iterator[FieldError]:
    """A schema that is no valid JSON Schema of an object, too big or deep, or reaching
    outside itself; and output names the reply's object would not have."""
    base = f"steps[{index}].output_schema"
    problems = output_schema_errors(schema)
    for path, message in problems:
        yield FieldError(f"{base}.{path}" if path else base, message)
    if problems or len(step.output) < 2:
        return
    properties = schema.get("properties")
    known = properties if isinstance(properties, dict) else {}
    for position, name in enumerate(step.output):
        if name not in known:
            yield FieldError(
                f"steps[{index}].output[{position}]",
                f"'{name}' is not among output_schema's properties: with several output "
                "names, each takes the reply's field of that name",
            )


# --- pydantic errors -> field errors -------------------------------------------------


def _field_error(detail: ErrorDetails) -> FieldError:
    loc = list(detail["loc"])
    # A discriminated union puts the tag in the path (steps.0.llm.provider); users never
    # wrote that segment, so drop it.
    if len(loc) > 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in STEP_TYPES:
        del loc[2]
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
        if kind == "union_tag_invalid":
            message = f"unknown step type {_short(ctx.get('tag'))}; must be one of {_ALLOWED_TYPES}"
        else:
            message = f"field required; must be one of {_ALLOWED_TYPES}"
        return FieldError(_path(loc), message)
    return FieldError(_path(loc), _message(kind, loc, detail))


def _message(kind: str, loc: Sequence[Any], detail: ErrorDetails) -> str:
    ctx = detail.get("ctx") or {}
    name = loc[-1] if loc and isinstance(loc[-1], str) else "value"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind == "literal_error":
        got = detail.get("input")
        if name == "provider" and got in LLM_PROVIDERS and got not in EMBEDDING_PROVIDERS:
            return (
                f"provider {_short(got)} does not offer embeddings; "
                f"must be one of {ctx.get('expected')}"
            )
        return f"unknown {name} {_short(got)}; must be one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_MESSAGES:
        return _PATTERN_MESSAGES[ctx["pattern"]]
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])  # our own validators' messages, without pydantic's prefix
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if list(loc) == ["steps"] and kind == "too_short":
        return "Steps array cannot be empty"
    if list(loc) == ["steps"] and kind == "too_long":
        return f"at most {MAX_STEPS} steps are allowed, got {ctx.get('actual_length')}"
    return str(detail["msg"])


def _path(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "definition"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unique(errors: Sequence[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))


# --- graph rules ------------------------------------------------------------------------


@dataclass
class _Shape:
    """What the graph rules need of one step, read leniently from raw input."""

    index: int
    id: str | None
    depends_on: list[tuple[int, str]] = field(default_factory=list)
    outputs: list[tuple[int, str]] = field(default_factory=list)
    templates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"steps[{self.index}]"


def _read_shapes(data: Any) -> list[_Shape]:
    """The parts of each step that can be read, whatever else is wrong with it."""
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        return []
    shapes = []
    for index, raw in enumerate(steps):
        if not isinstance(raw, dict):
            continue
        step_id = raw.get("id")
        shape = _Shape(index, step_id if isinstance(step_id, str) else None)
        shape.depends_on = _strings(raw.get("depends_on"))
        shape.outputs = _strings(raw.get("output"))
        shape.templates = [
            (name, raw[name]) for name in _TEMPLATED_FIELDS if isinstance(raw.get(name), str)
        ]
        if isinstance(raw.get("filter"), dict):
            shape.templates.extend(iter_data_templates(raw["filter"], "filter"))
        shapes.append(shape)
    return shapes


def _strings(value: Any) -> list[tuple[int, str]]:
    if not isinstance(value, list):
        return []
    return [(position, item) for position, item in enumerate(value) if isinstance(item, str)]


def _graph_errors(shapes: list[_Shape]) -> list[FieldError]:
    errors: list[FieldError] = []
    node_of: dict[str, int] = {}  # step id -> position in ``shapes`` of its first use
    for node, shape in enumerate(shapes):
        if shape.id is None:
            continue
        if shape.id in RESERVED_STEP_IDS:
            errors.append(FieldError(f"{shape.path}.id", f"step id '{shape.id}' is reserved"))
        first = node_of.setdefault(shape.id, node)
        if first != node:
            errors.append(
                FieldError(
                    f"{shape.path}.id",
                    f"duplicate step id '{shape.id}' (already used by {shapes[first].path})",
                )
            )

    parents: list[list[int]] = []
    for shape in shapes:
        own: list[int] = []
        for position, dep in shape.depends_on:
            field_path = f"{shape.path}.depends_on[{position}]"
            if dep == shape.id:
                errors.append(FieldError(field_path, f"step '{dep}' cannot depend on itself"))
            elif dep not in node_of:
                errors.append(FieldError(field_path, f"unknown step '{dep}'"))
            else:
                own.append(node_of[dep])
        parents.append(list(dict.fromkeys(own)))

    producer = _check_outputs(shapes, errors)
    cycles = _cycles(parents)
    errors.extend(_cycle_error(shapes, cycle) for cycle in cycles)
    if not cycles:
        errors.extend(_variable_errors(shapes, parents, producer))
    return errors


def _check_outputs(shapes: list[_Shape], errors: list[FieldError]) -> dict[str, int]:
    """Output name -> position of its producer, recording every clash along the way."""
    producer: dict[str, int] = {}
    for node, shape in enumerate(shapes):
        seen: set[str] = set()
        for position, name in shape.outputs:
            field_path = f"{shape.path}.output[{position}]"
            if name in seen:
                errors.append(FieldError(field_path, f"duplicate output name '{name}'"))
                continue
            seen.add(name)
            first = producer.setdefault(name, node)
            if first != node:
                errors.append(
                    FieldError(
                        field_path,
                        f"output '{name}' is already produced by step '{shapes[first].id}' "
                        f"({shapes[first].path}); output names must be unique",
                    )
                )
    return producer


def _variable_errors(
    shapes: list[_Shape], parents: list[list[int]], producer: dict[str, int]
) -> Iterator[FieldError]:
    masks = ancestor_masks(parents)
    for node, shape in enumerate(shapes):
        for field_name, text in shape.templates:
            field_path = f"{shape.path}.{field_name}"
            for name in find_variables(text):
                source = producer.get(name)
                if source is None:
                    continue  # produced by no step: a workflow input
                if source == node:
                    yield FieldError(field_path, f"'{{{{{name}}}}}' is an output of this step")
                elif not masks[node] >> source & 1:
                    yield FieldError(
                        field_path,
                        f"'{{{{{name}}}}}' is an output of step '{shapes[source].id}', which "
                        f"is not an ancestor of '{shape.id}'; add it to depends_on",
                    )


def _cycles(parents: list[list[int]]) -> list[list[int]]:
    """One cycle per strongly connected group of steps, starting at its first step."""
    groups = [group for group in _strongly_connected(parents) if len(group) > 1]
    starts = sorted((min(group), set(group)) for group in groups)
    return [_shortest_cycle(start, parents, group) for start, group in starts]


def _strongly_connected(edges: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative so a 1,000-step chain cannot exhaust the stack."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    groups: list[list[int]] = []
    for root in range(len(edges)):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(edges[root]))]
        while work:
            node, pending = work[-1]
            for neighbour in pending:
                if neighbour not in index:
                    index[neighbour] = low[neighbour] = len(index)
                    stack.append(neighbour)
                    on_stack.add(neighbour)
                    work.append((neighbour, iter(edges[neighbour])))
                    break
                if neighbour in on_stack:
                    low[node] = min(low[node], index[neighbour])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    group: list[int] = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                        on_stack.discard(group[-1])
                    groups.append(group)
    return groups


def _shortest_cycle(start: int, parents: list[list[int]], group: set[int]) -> list[int]:
    previous: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for node in frontier:
            for parent in parents[node]:
                if parent == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if parent in group and parent not in previous and parent != start:
                    previous[parent] = node
                    following.append(parent)
        frontier = following
    raise AssertionError("a strongly connected group always has a cycle")


def _cycle_error(shapes: list[_Shape], cycle: list[int]) -> FieldError:
    first, second = shapes[cycle[0]], shapes[cycle[1]]
    position = next(pos for pos, dep in first.depends_on if dep == second.id)
    names = " -> ".join(str(shapes[node].id) for node in cycle)
    return FieldError(f"{first.path}.depends_on[{position}]", f"cycle: {names}")
