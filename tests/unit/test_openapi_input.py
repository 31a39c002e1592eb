"""The served OpenAPI document says what the server enforces on input (issue 10, item 9):
a value the document admits is one the server takes, and what the server refuses the
document refuses too, as far as JSON Schema can say it."""

from __future__ import annotations

import re
import sys
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_orchestrator.api.openapi import openapi_document
from llm_orchestrator.api.openapi_input import STORABLE_TEXT
from llm_orchestrator.api.routers.audit import _iso_datetime
from llm_orchestrator.api.schemas.triggers import SCHEDULE_PATTERN
from llm_orchestrator.api.schemas.workflows import _SPACE, WHOLE_VARIABLE_PATTERN
from llm_orchestrator.api.storable import unstorable_values
from llm_orchestrator.errors import ValidationFailed
from llm_orchestrator.triggers.schedule import ScheduleError, parse_schedule
from llm_orchestrator.workflows import parse_definition
from llm_orchestrator.workflows.models import RetryPolicy

DOCUMENT = openapi_document()
COMPONENTS = DOCUMENT["components"]["schemas"]


def validator(name: str) -> Any:
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    )


def request_schemas() -> list[tuple[str, Any]]:
    """(where, schema) for every parameter and request body of every operation."""
    found = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                found.append((f"{method} {path} {parameter['name']}", parameter["schema"]))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                found.append((f"{method} {path} body", media["schema"]))
    return found


def strings_without_a_rule(schema: Any, where: str, seen: set[str]) -> list[str]:
    if isinstance(schema, list):
        return [p for item in schema for p in strings_without_a_rule(item, where, seen)]
    if not isinstance(schema, dict):
        return []
    problems = []
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/") and ref not in seen:
        seen.add(ref)
        name = ref.rsplit("/", 1)[1]
        problems += strings_without_a_rule(COMPONENTS[name], name, seen)
    if schema.get("type") == "string" and not schema.keys() & {"pattern", "enum", "const"}:
        problems.append(where)
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        if "propertyNames" not in schema or schema.get("additionalProperties", True) is True:
            problems.append(f"{where} (open object)")
    for key, value in schema.items():
        if key not in ("not", "examples", "default", "const", "enum"):
            problems += strings_without_a_rule(value, f"{where}.{key}", seen)
    return problems


def test_every_request_string_and_open_object_states_its_rule() -> None:
    seen: set[str] = set()
    problems = [p for where, s in request_schemas() for p in strings_without_a_rule(s, where, seen)]
    assert problems == []


def test_the_workflow_body_is_the_discriminated_definition() -> None:
    body = DOCUMENT["paths"]["/api/v1/workflows"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WorkflowDefinition"
    }
    steps = COMPONENTS["WorkflowDefinition"]["properties"]["steps"]["items"]
    assert steps["discriminator"]["propertyName"] == "type"
    assert set(steps["discriminator"]["mapping"]) == {
        "llm",
        "embed",
        "vector_upsert",
        "vector_search",
    }


def llm(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "type": "llm", "provider": "openai", "model": "m", "prompt": "p"} | fields


def upsert(**fields: Any) -> dict[str, Any]:
    step = {"id": "w", "type": "vector_upsert", "database": "qdrant", "index": "docs"}
    return step | {"vectors": "{{v}}", "documents": "{{d}}"} | fields


DEFINITIONS = [
    # (definition, accepted by the server)
    ({"name": "ok", "steps": [llm()]}, True),
    ({"name": "ok", "steps": [llm(max_tokens=100.0, retry={"max_attempts": 2.0})]}, True),
    ({"name": "ok", "timeout_seconds": None, "steps": [llm()]}, True),
    ({"name": "ok", "steps": [llm(max_tokens=100.5)]}, False),
    ({"name": "ok", "steps": [llm(max_tokens="100")]}, False),
    ({"name": "nul\x00", "steps": [llm()]}, False),
    ({"name": "ok", "steps": [llm(prompt="a\x00b")]}, False),
    ({"name": "ok", "steps": [llm(id="Done")]}, False),
    ({"name": "ok", "steps": [llm(provider="anthropic", temperature=1.5)]}, False),
    ({"name": "ok", "steps": [llm(provider="anthropic", temperature=1.0)]}, True),
    ({"name": "ok", "steps": [llm(provider="openai", temperature=1.5)]}, True),
    ({"name": "ok", "steps": [llm(output=["x", "x"])]}, False),
    ({"name": "ok", "steps": [llm(depends_on=["not an id"])]}, False),
    ({"name": "ok", "steps": [upsert()]}, True),
    ({"name": "ok", "steps": [upsert(vectors=" {{ v }}\n")]}, True),
    ({"name": "ok", "steps": [upsert(vectors="{{v}} and more")]}, False),
    ({"name": "ok", "steps": [upsert(database="pinecone", index="Bad_Name")]}, False),
    ({"name": "ok", "steps": [upsert(database="pinecone", index="good-name")]}, True),
    ({"name": "ok", "steps": [upsert(index="a/b")]}, False),
    ({"name": "ok", "steps": [upsert(database="weaviate", index="a/b")]}, True),
    ({"name": "ok", "steps": [upsert(index="tab\there")]}, False),
    (
        {
            "name": "ok",
            "steps": [
                {"id": "e", "type": "embed", "provider": "openai", "model": "m", "input": "x"}
                | {"input_type": "search_query"}
            ],
        },
        False,
    ),
    (
        {
            "name": "ok",
            "steps": [
                {"id": "s", "type": "vector_search", "database": "qdrant", "index": "docs"}
                | {"query": "q", "filter": {"lang": "en", "n": 1, "ok": True}}
            ],
        },
        True,
    ),
    (
        {
            "name": "ok",
            "steps": [
                {"id": "s", "type": "vector_search", "database": "qdrant", "index": "docs"}
                | {"query": "q", "filter": {"lang": ["en"]}}
            ],
        },
        False,
    ),
]


@pytest.mark.parametrize(("definition", "accepted"), DEFINITIONS)
def test_the_definition_schema_and_the_server_agree(
    definition: dict[str, Any], accepted: bool
) -> None:
    try:
        parse_definition(definition)
        server = not unstorable_values(definition)  # checked for every request
    except ValidationFailed:
        server = False

    assert server is accepted
    assert validator("WorkflowDefinition").is_valid(definition) is accepted


def test_whole_numbers_are_integers_and_nothing_else_is() -> None:
    assert RetryPolicy.model_validate({"max_attempts": 4.0}).max_attempts == 4
    for refused in (4.5, "4", True, float("inf")):
        with pytest.raises(ValueError):
            RetryPolicy.model_validate({"max_attempts": refused})


def test_the_space_class_is_pythons() -> None:
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    assert re.findall(_SPACE, everything) == re.findall(r"\s", everything)
    assert re.search(WHOLE_VARIABLE_PATTERN, "\u3000{{ name }}\x1c")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2025-11-14T10:00:00Z", True),
        ("2025-11-14T10:00+05:30", True),
        ("2024-02-29T00:00:00.123456Z", True),
        ("2000-02-29T00:00Z", True),
        ("2025-02-29T00:00Z", False),
        ("1900-02-29T00:00Z", False),
        ("2025-04-31T00:00Z", False),
        ("0000-01-01T00:00Z", False),
        ("2025-11-14T10:00:00", False),
        ("2025-11-14T24:00:00Z", False),
        ("2025-11-14T10:00:00Z\n", False),
        ("\u0662\u0660\u0662\u0665-11-14T10:00:00Z", False),
        ("1700000000", False),
    ],
)
def test_the_time_pattern_is_the_servers_rule(value: str, valid: bool) -> None:
    try:
        _iso_datetime(value, "start_time")
        server = True
    except ValidationFailed:
        server = False

    assert server is valid
    # ECMA-262's "$" (the document's dialect) does not match before a final newline.
    schema = DOCUMENT["paths"]["/api/v1/audit/events"]["get"]["parameters"]
    start = next(p for p in schema if p["name"] == "start_time")["schema"]
    assert jsonschema_rs.validator_for(start).is_valid(value) is valid


def test_key_scopes_are_an_enum() -> None:
    scopes = COMPONENTS["CreateKeyRequest"]["properties"]["scopes"]["items"]
    assert "admin" in scopes["enum"] and "workflow:read" in scopes["enum"]


_RANGE = re.compile(r"([0-9A-Z]+)-([0-9A-Z]+)")


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.from_regex(SCHEDULE_PATTERN, fullmatch=True))
def test_a_documented_schedule_is_taken_once_its_ranges_run_forwards(expression: str) -> None:
    from tests.fuzz_hooks import forward_cron

    expression = forward_cron(expression)
    if len(expression) > 256:
        return  # the schema's maxLength
    try:
        parse_schedule(expression)
    except ScheduleError as exc:
        pytest.fail(f"{expression}: {exc}")


def test_storable_text_refuses_nul_only() -> None:
    text = jsonschema_rs.validator_for({"type": "string", "pattern": STORABLE_TEXT})
    assert text.is_valid("any text, even \u2028 or \U0001f600")
    assert not text.is_valid("a\x00b")
