"""The pure parts of structured output: which schema a step has, when OpenAI may get it in
strict mode, how a reply is checked and how it maps onto output names."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.providers import ChatResult
from llm_orchestrator.steps.outputs import structured_outputs, text_outputs
from llm_orchestrator.steps.structured import check_reply, correction
from llm_orchestrator.workflows.output_schemas import (
    derived_schema,
    effective_schema,
    strict_compatible,
)
from tests.fakes.schema_values import example_value

CLOSED = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "scores": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["name", "scores"],
    "additionalProperties": False,
}


def reply(text: str = "", structured: Any = None, refusal: str | None = None) -> ChatResult:
    return ChatResult(text, 1, 1, "m", 1.0, structured=structured, refusal=refusal)


def test_only_several_names_or_an_own_schema_ask_for_json() -> None:
    assert effective_schema(None, []) is None
    assert effective_schema(None, ["answer"]) is None
    assert effective_schema(CLOSED, ["answer"]) is CLOSED
    assert effective_schema(None, ["a", "b"]) == derived_schema(["a", "b"])
    assert derived_schema(["a", "b"])["properties"] == {
        "a": {"type": "string"},
        "b": {"type": "string"},
    }


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (CLOSED, True),
        (derived_schema(["a", "b"]), True),
        ({**CLOSED, "additionalProperties": True}, False),
        ({**CLOSED, "required": ["name"]}, False),
        (
            {
                **CLOSED,
                "properties": {"name": {"type": "object", "properties": {"x": {}}}},
                "required": ["name"],
            },
            False,
        ),
        ({**CLOSED, "properties": {"name": {"type": "string", "minLength": 2}}}, False),
        ({**CLOSED, "allOf": [{"required": ["name"]}]}, False),
    ],
    ids=["closed", "derived", "open", "optional", "open-nested", "minLength", "allOf"],
)
def test_strict_mode_only_for_schemas_that_meet_its_rules(
    schema: dict[str, Any], strict: bool
) -> None:
    assert strict_compatible(schema) is strict


def test_a_matching_reply_passes_and_fenced_json_is_read() -> None:
    value, mismatch = check_reply(CLOSED, reply('```json\n{"name": "a", "scores": [1]}\n```'))
    assert (value, mismatch) == ({"name": "a", "scores": [1]}, None)
    value, mismatch = check_reply(CLOSED, reply(structured={"name": "b", "scores": []}))
    assert mismatch is None and value["name"] == "b"


def test_a_mismatch_names_the_path_the_rule_and_where_the_rule_is() -> None:
    _, mismatch = check_reply(CLOSED, reply('{"name": "a", "scores": [1, "two"]}'))
    assert mismatch is not None
    assert (mismatch.path, mismatch.rule, mismatch.schema_path) == (
        "$.scores[1]",
        "type",
        "#/properties/scores/items/type",
    )
    assert "at $.scores[1]: 'two' is not of type 'integer'" in correction(mismatch)


def test_text_that_is_not_json_and_a_refusal_are_mismatches() -> None:
    _, not_json = check_reply(CLOSED, reply("I'd rather not " * 50))
    assert not_json is not None and not_json.rule == "json"
    assert len(not_json.message) < 300
    cut = ChatResult('{"name": "a", "sco', 1, 3, "m", 1.0, cut_off=True)
    _, truncated = check_reply(CLOSED, cut)
    assert truncated is not None and "stopped at the max_tokens limit" in truncated.message
    _, refused = check_reply(CLOSED, reply(refusal="I can't help with that."))
    assert refused is not None and "refused: I can't help with that." in refused.message


def test_outputs_map_the_whole_object_or_its_fields() -> None:
    value = {"name": "a", "scores": [1]}
    assert structured_outputs(["person"], value, own_schema=True) == {"person": value}
    assert structured_outputs([], value, own_schema=True) == {"text": value}
    assert structured_outputs(["name", "other"], value, own_schema=True) == {
        "name": "a",
        "other": None,
    }
    assert text_outputs(["answer"], "hi") == {"answer": "hi"}
    assert text_outputs([], "hi") == {"text": "hi"}
    with pytest.raises(ValueError):
        text_outputs(["a", "b"], "hi")


@pytest.mark.parametrize(
    "schema",
    [
        CLOSED,
        {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}},
        {
            "type": "object",
            "properties": {
                "kind": {"enum": ["x", "y"]},
                "n": {"type": "number", "exclusiveMinimum": 3, "maximum": 9},
                "code": {"type": "string", "minLength": 5, "maxLength": 6},
                "maybe": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/item"}]},
                "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 3},
            },
            "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        },
    ],
    ids=["closed", "format", "mixed"],
)
def test_the_fakes_generate_values_their_schema_accepts(schema: dict[str, Any]) -> None:
    value = example_value(schema, seed="a prompt")

    assert check_reply(schema, reply(structured=value))[1] is None
    assert example_value(schema, seed="a prompt") == value
