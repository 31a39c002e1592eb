"""Structured outputs of ``llm`` steps, through the API and the official SDKs against the
fake providers: each provider asked through its own native mechanism, the reply checked
against the schema and mapped onto the output names, one corrective retry, then a readable
failure; and the schemas refused at create time."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.llm_support import (
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    llm,
    openai_fake,
    refused,
    run,
    server,
)

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake", "server"]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COHERE_CHAT = "/v2/chat"
PROMPT = "Answer {{question}}"
ASKED = "Answer why is the sky blue"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["name", "age"],
}
"""Not strict-compatible (open, ``tags`` optional): OpenAI gets it with strict off."""


def outcomes(final: dict[str, Any], step_id: str) -> list[str]:
    return [a["outcome"] for a in final["steps"][step_id]["usage"]["attempts"]]


def outputs(final: dict[str, Any]) -> dict[str, Any]:
    assert final["status"] == "completed", final
    result: dict[str, Any] = final["context"]["outputs"]
    return result


# -- each provider's native mechanism ------------------------------------------------------


async def test_several_output_names_ask_openai_for_a_strict_json_schema(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    step = llm("facts", "openai", "gpt-4o", output=["summary", "sentiment"])

    final = await run(client, admin, [step])

    assert outputs(final) == {"summary": f"summary: {ASKED}", "sentiment": f"sentiment: {ASKED}"}
    [call] = openai_fake.requests_to(CHAT)
    assert call.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "facts",
            "schema": {
                "type": "object",
                "properties": {"summary": {"type": "string"}, "sentiment": {"type": "string"}},
                "required": ["summary", "sentiment"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    assert outcomes(final, "facts") == ["succeeded"]


async def test_an_output_schema_that_cannot_be_strict_is_sent_to_openai_non_strict(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    step = llm("person", "openai", "gpt-4o", output=["person"], output_schema=PERSON)

    final = await run(client, admin, [step])

    # One output name takes the whole object, with the schema's types.
    assert outputs(final) == {
        "person": {
            "name": f"name: {ASKED}",
            "age": 0,
            "tags": [f"tags 1: {ASKED}", f"tags 2: {ASKED}"],
        }
    }
    [call] = openai_fake.requests_to(CHAT)
    sent = call.body["response_format"]["json_schema"]
    assert (sent["schema"], sent["strict"]) == (PERSON, False)


async def test_anthropic_is_forced_to_call_a_tool_whose_input_schema_is_the_schema(
    client: httpx.AsyncClient, admin: Session, anthropic_fake: FakeAnthropic
) -> None:
    step = llm(
        "person",
        "anthropic",
        "claude-sonnet-4-20250514",
        output=["name", "age"],
        output_schema=PERSON,
    )

    final = await run(client, admin, [step])

    # Several names each take their field.
    assert outputs(final) == {"name": f"name: {ASKED}", "age": 0}
    [call] = anthropic_fake.requests_to(MESSAGES)
    [tool] = call.body["tools"]
    assert (tool["name"], tool["input_schema"]) == ("person", PERSON)
    assert call.body["tool_choice"] == {"type": "tool", "name": "person"}


async def test_cohere_gets_a_json_object_response_format_with_the_schema(
    client: httpx.AsyncClient, admin: Session, cohere_fake: FakeCohere
) -> None:
    step = llm("person", "cohere", "command-r-plus", output=["person"], output_schema=PERSON)

    final = await run(client, admin, [step])

    assert outputs(final)["person"]["age"] == 0
    [call] = cohere_fake.requests_to(COHERE_CHAT)
    assert call.body["response_format"] == {"type": "json_object", "json_schema": PERSON}
    # Cohere asks for the messages to say that JSON is wanted, too.
    assert call.body["messages"][0]["role"] == "system"
    assert "JSON" in call.body["messages"][0]["content"]


async def test_a_single_output_name_without_a_schema_stays_plain_text(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    final = await run(client, admin, [llm("answer", "openai", "gpt-4o")])

    assert outputs(final) == {"answer": f"echo: {ASKED}"}
    [call] = openai_fake.requests_to(CHAT)
    assert "response_format" not in call.body


async def test_a_fallback_provider_gets_the_same_schema_its_own_way(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
) -> None:
    openai_fake.fail_next(503, times=2)
    step = llm(
        "facts",
        "openai",
        "gpt-4o",
        output=["summary", "sentiment"],
        fallback=[{"provider": "anthropic", "model": "claude-3-5-haiku-latest"}],
    )

    final = await run(client, admin, [step])

    assert outputs(final)["sentiment"] == f"sentiment: {ASKED}"
    [call] = anthropic_fake.requests_to(MESSAGES)
    assert call.body["tool_choice"] == {"type": "tool", "name": "facts"}
    assert call.body["tools"][0]["input_schema"]["required"] == ["summary", "sentiment"]
    assert outcomes(final, "facts") == [
        "ProviderUnavailable",
        "ProviderUnavailable",
        "succeeded",
    ]


# -- the corrective retry ------------------------------------------------------------------


async def test_a_reply_that_is_not_json_is_retried_once_with_the_error_then_succeeds(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    openai_fake.answer_next("Sure! Here is the summary you asked for.")
    step = llm("facts", "openai", "gpt-4o", output=["summary", "sentiment"])

    final = await run(client, admin, [step])

    assert outputs(final)["summary"] == f"summary: {ASKED}"
    first, second = openai_fake.requests_to(CHAT)
    assert len(first.body["messages"]) == 1
    _, reply, correction = second.body["messages"]
    assert reply == {"role": "assistant", "content": "Sure! Here is the summary you asked for."}
    assert correction["role"] == "user"
    assert "not JSON" in correction["content"] and "schema rule 'json'" in correction["content"]
    assert second.body["response_format"] == first.body["response_format"]
    usage = final["steps"]["facts"]["usage"]
    assert [a["outcome"] for a in usage["attempts"]] == ["StructuredOutputInvalid", "succeeded"]
    # Both calls are paid for, and the step's totals count both.
    assert all(a["cost_usd"] > 0 and a["output_tokens"] > 0 for a in usage["attempts"])
    assert usage["input_tokens"] == sum(a["input_tokens"] for a in usage["attempts"])


async def test_an_anthropic_reply_without_the_tool_call_is_corrected_in_the_conversation(
    client: httpx.AsyncClient, admin: Session, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.answer_next({"name": "Ada", "age": -3})
    step = llm(
        "person", "anthropic", "claude-3-5-haiku-latest", output=["person"], output_schema=PERSON
    )

    final = await run(client, admin, [step])

    assert outputs(final)["person"]["age"] == 0
    first, second = anthropic_fake.requests_to(MESSAGES)
    _, reply, correction = second.body["messages"]
    assert json.loads(reply["content"]) == {"name": "Ada", "age": -3}
    assert "at $.age" in correction["content"] and "'minimum'" in correction["content"]
    assert second.body["tool_choice"] == first.body["tool_choice"]
    assert outcomes(final, "person") == ["StructuredOutputInvalid", "succeeded"]


async def test_a_second_miss_fails_the_step_naming_the_step_path_and_rule(
    client: httpx.AsyncClient, admin: Session, cohere_fake: FakeCohere, openai_fake: FakeOpenAI
) -> None:
    cohere_fake.answer_next({"name": "Ada", "age": "forty"}, times=2)
    step = llm(
        "person",
        "cohere",
        "command-r",
        output=["person"],
        output_schema=PERSON,
        fallback=[{"provider": "openai", "model": "gpt-4o"}],
    )

    final = await run(client, admin, [step])

    assert final["status"] == "failed"
    error = final["error"]
    assert error["type"] == "StructuredOutputInvalid"
    assert "step 'person'" in error["message"]
    assert "at $.age" in error["message"]
    assert "schema rule 'type' at '#/properties/age/type'" in error["message"]
    assert "'forty' is not of type 'integer'" in error["message"]
    assert outcomes(final, "person") == ["StructuredOutputInvalid", "StructuredOutputInvalid"]
    assert len(cohere_fake.requests_to(COHERE_CHAT)) == 2
    # A model that answers is not an outage: no fallback, no state-machine retry.
    assert openai_fake.requests_to(CHAT) == []
    assert final["context"]["outputs"] == {}


async def test_a_missing_required_field_fails_readably_on_openai(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    openai_fake.answer_next({"summary": "short"}, times=2)
    step = llm("facts", "openai", "gpt-4o", output=["summary", "sentiment"])

    final = await run(client, admin, [step])

    assert final["error"]["type"] == "StructuredOutputInvalid"
    assert "'sentiment' is a required property" in final["error"]["message"]
    assert "schema rule 'required'" in final["error"]["message"]
    assert len(openai_fake.requests_to(CHAT)) == 2


async def test_an_openai_refusal_is_a_miss_and_the_correction_quotes_it(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    refusal = {
        "id": "chatcmpl-refused",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    openai_fake.reply_next(json.dumps(refusal))
    step = llm("facts", "openai", "gpt-4o", output=["summary", "sentiment"])

    final = await run(client, admin, [step])

    assert outputs(final)["summary"] == f"summary: {ASKED}"
    _, second = openai_fake.requests_to(CHAT)
    _, reply, correction = second.body["messages"]
    assert reply == {"role": "assistant", "content": "I can't."}
    assert "the model refused: I can't." in correction["content"]
    assert outcomes(final, "facts") == ["StructuredOutputInvalid", "succeeded"]


async def test_a_reply_cut_off_at_max_tokens_says_so(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    step = llm("facts", "openai", "gpt-4o", output=["summary", "sentiment"], max_tokens=3)

    final = await run(client, admin, [step])

    assert final["error"]["type"] == "StructuredOutputInvalid"
    assert (
        "stopped at the max_tokens limit: raise the step's max_tokens"
        in (final["error"]["message"])
    )
    assert outcomes(final, "facts") == ["StructuredOutputInvalid", "StructuredOutputInvalid"]


# -- create-time refusals ------------------------------------------------------------------


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize(
    ("schema", "field", "words"),
    [
        ({"type": "array"}, "steps[0].output_schema.type", "must be 'object'"),
        ([{"type": "object"}], "steps[0].output_schema", "must be a JSON object"),
        (
            {"type": "object", "properties": {"a": {"type": "integr"}}},
            "steps[0].output_schema.properties.a.type",
            "not a valid JSON Schema",
        ),
        (
            {"type": "object", "required": "a"},
            "steps[0].output_schema.required",
            "not a valid JSON Schema",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
            "steps[0].output_schema.properties.a.$ref",
            "only references inside the schema",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
            "steps[0].output_schema.properties.a.$ref",
            "points at nothing",
        ),
        (
            {"type": "object", "$schema": "https://example.com/my-dialect"},
            "steps[0].output_schema.$schema",
            "unknown JSON Schema dialect",
        ),
        (_deep(40), "steps[0].output_schema", "levels deep"),
        (
            {"type": "object", "description": "x" * 40_000},
            "steps[0].output_schema",
            "at most 32768 characters",
        ),
    ],
    ids=[
        "not-an-object-type",
        "not-a-json-object",
        "unknown-type",
        "required-not-a-list",
        "remote-ref",
        "dangling-ref",
        "unknown-dialect",
        "too-deep",
        "too-big",
    ],
)
async def test_a_bad_output_schema_is_refused_at_create_time(
    client: httpx.AsyncClient, admin: Session, schema: Any, field: str, words: str
) -> None:
    errors = await refused(
        client, admin, [llm("a", "openai", "gpt-4o", output=["x"], output_schema=schema)]
    )

    assert words in errors[field], errors


async def test_output_names_must_be_properties_of_the_output_schema(
    client: httpx.AsyncClient, admin: Session
) -> None:
    errors = await refused(
        client,
        admin,
        [llm("a", "openai", "gpt-4o", output=["name", "height"], output_schema=PERSON)],
    )

    assert list(errors) == ["steps[0].output[1]"]
    assert "'height' is not among output_schema's properties" in errors["steps[0].output[1]"]


async def test_only_llm_steps_take_an_output_schema(
    client: httpx.AsyncClient, admin: Session
) -> None:
    step = {
        "id": "vec",
        "type": "embed",
        "provider": "openai",
        "model": "text-embedding-3-small",
        "input": "{{question}}",
        "output": ["vector"],
        "output_schema": PERSON,
    }

    errors = await refused(client, admin, [step])

    assert errors == {"steps[0].output_schema": "unknown field"}
