"""Schemathesis hooks for ``make fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``).

The OpenAPI document describes every rule JSON Schema can express. A few rules relate one
value to another, which JSON Schema cannot say, and the document states them in words:

- a workflow definition's graph rules (``WorkflowDefinition``'s description): unique step
  ids, ``depends_on`` naming earlier-defined steps without cycles, one producer per output,
  outputs used only downstream of their producer;
- ``GET /audit/events``: ``start_time`` not after ``end_time``;
- a trigger's cron ranges run forwards, and an event pattern's numeric range has its lower
  bound below its upper one;
- an execution (or a trigger) gives every input its workflow requires: the hook reads the
  workflow's ``inputs`` from the server, as a client would (``LLMO_FUZZ_URL`` and
  ``LLMO_FUZZ_API_KEY``, set by ``tests/fuzz.py``).

For positive (schema-valid) cases only, these hooks bend a generated request to follow
those rules as a client would; negative cases are left exactly as generated, so every
schema violation still has to be refused. Every other positive case also names the real
resources ``tests/fuzz.py`` created (``LLMO_FUZZ_KNOWN``: ids by parameter name) instead of
random ids, so it reaches more than the 404; the rest keep their generated ids.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from datetime import datetime
from typing import Any

import httpx
import schemathesis

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WORKFLOW_BODY = re.compile(r"/workflows(/\{[^}]+\})?$")
_NEEDS_INPUTS = re.compile(r"/workflows/\{workflow_id\}/(execute|triggers)$")
_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_WEEKDAYS = "SUN MON TUE WED THU FRI SAT".split()
_KNOWN: dict[str, str] = json.loads(os.environ.get("LLMO_FUZZ_KNOWN") or "{}")
_TURNS = itertools.count()
_CRON_NAMES = {name: i + 1 for i, name in enumerate(_MONTHS)} | {
    name: i + 1 for i, name in enumerate(_WEEKDAYS)
}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    path = case.operation.path
    # Deleting the seeded workflow would leave every later case a 404 again.
    if not (case.method.upper() == "DELETE" and path.endswith("/workflows/{workflow_id}")):
        _name_known_resources(case)
    if (
        case.method.upper() in ("POST", "PUT")
        and _WORKFLOW_BODY.search(path)
        and isinstance(case.body, dict)
    ):
        case.body = consistent_definition(case.body)
    if _NEEDS_INPUTS.search(path) and isinstance(case.body, dict):
        _give_required_inputs(case)
    if path.endswith("/triggers") and isinstance(case.body, dict):
        if isinstance(case.body.get("schedule"), str):
            case.body["schedule"] = forward_cron(case.body["schedule"])
        if isinstance(case.body.get("event_pattern"), dict):
            _ordered_numeric_ranges(case.body["event_pattern"])
    if path.endswith("/audit/events") and isinstance(case.query, dict):
        start, end = case.query.get("start_time"), case.query.get("end_time")
        if isinstance(start, str) and isinstance(end, str) and _later(start, end):
            case.query["start_time"], case.query["end_time"] = end, start
    return case


def _name_known_resources(case: Any) -> None:
    if not _KNOWN or next(_TURNS) % 2:
        return
    for values in (case.path_parameters, case.query, case.body):
        if isinstance(values, dict):
            for name in values.keys() & _KNOWN.keys():
                values[name] = _KNOWN[name]


def _later(start: str, end: str) -> bool:
    try:
        return datetime.fromisoformat(start) > datetime.fromisoformat(end)
    except (ValueError, OverflowError):
        return False


def consistent_definition(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its steps made to follow the graph rules, shapes untouched."""
    steps = body.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return body
    steps = [dict(step) for step in steps]
    seen: set[str] = set()
    for index, step in enumerate(steps):
        step_id = step.get("id")
        if isinstance(step_id, str):
            if step_id in seen:
                step_id = f"{step_id[:56]}-{index}"
                step["id"] = step_id
            seen.add(step_id)
    # depends_on: only steps defined earlier, which rules out cycles and unknown ids.
    earlier: list[str] = []
    for step in steps:
        if isinstance(step.get("depends_on"), list):
            step["depends_on"] = [d for d in step["depends_on"] if d in earlier]
        if isinstance(step.get("id"), str):
            earlier.append(step["id"])
    # One producer per output name.
    producer: dict[str, int] = {}
    for index, step in enumerate(steps):
        if isinstance(step.get("output"), list):
            step["output"] = [
                name for name in step["output"] if producer.setdefault(name, index) == index
            ]
    # A {{name}} produced by a step that is not upstream: that step stops producing it, and
    # the name becomes a workflow input.
    ancestors = _ancestors(steps)
    for index, step in enumerate(steps):
        for name in _variables(step):
            source = producer.get(name)
            if source is not None and source not in ancestors[index]:
                steps[source]["output"] = [n for n in steps[source]["output"] if n != name]
                del producer[name]
    return {**body, "steps": steps}


def _ancestors(steps: list[dict[str, Any]]) -> list[set[int]]:
    index_of = {step.get("id"): index for index, step in enumerate(steps)}
    result: list[set[int]] = []
    for step in steps:
        own: set[int] = set()
        for dep in step.get("depends_on") or []:
            parent = index_of[dep]
            own |= {parent} | result[parent]
        result.append(own)
    return result


def _variables(step: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    pending: list[Any] = [value for key, value in step.items() if key not in ("id", "type")]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            names.update(_VARIABLE.findall(value))
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return names


def forward_cron(expression: str) -> str:
    """``cron(…)`` with every backward range (``5-3``, ``FRI-MON``) turned round."""
    if not (expression.startswith("cron(") and expression.endswith(")")):
        return expression
    fields = expression[5:-1].split(" ")
    return "cron(" + " ".join(",".join(map(_forward, f.split(","))) for f in fields) + ")"


def _forward(part: str) -> str:
    base, slash, step = part.partition("/")
    first, dash, last = base.partition("-")
    if dash and _cron_value(first) > _cron_value(last):
        base = f"{last}-{first}"
    return base + slash + step


def _cron_value(text: str) -> int:
    return _CRON_NAMES.get(text.upper(), int(text) if text.isdigit() else 0)


def _ordered_numeric_ranges(pattern: Any) -> None:
    pending = [pattern]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            numeric = item.get("numeric")
            if isinstance(numeric, list) and len(numeric) == 4:
                low, high = numeric[1], numeric[3]
                if _is_number(low) and _is_number(high) and low >= high:
                    low, high = min(low, high), max(low, high)
                    if low == high:
                        low = low - 1 if low > -5e9 else low
                        high = low + 1 if low == high else high
                    numeric[1], numeric[3] = low, high
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _give_required_inputs(case: Any) -> None:
    workflow_id = (case.path_parameters or {}).get("workflow_id")
    url, key = os.environ.get("LLMO_FUZZ_URL"), os.environ.get("LLMO_FUZZ_API_KEY")
    if not (isinstance(workflow_id, str) and url and key):
        return
    try:
        response = httpx.get(
            f"{url}/workflows/{workflow_id}", headers={"X-API-Key": key}, timeout=30
        )
    except httpx.HTTPError:
        return
    if response.status_code != 200:
        return
    inputs = case.body.get("inputs")
    if inputs is None:
        inputs = case.body["inputs"] = {}
    if isinstance(inputs, dict):
        for name in response.json().get("inputs", []):
            inputs.setdefault(name, "fuzz")
