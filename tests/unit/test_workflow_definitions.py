"""Workflow definition parsing: every rule reports its field path and a readable message."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.errors import FieldError, ValidationFailed
from llm_orchestrator.workflows import (
    DEFAULT_WORKFLOW_TIMEOUT_SECONDS,
    EmbedStep,
    LlmStep,
    VectorSearchStep,
    WorkflowDefinition,
    ancestors,
    parse_definition,
    topological_levels,
)
from tests.samples import RAG_WORKFLOW

SENTIMENT: dict[str, Any] = {
    "name": "sentiment-analyzer",
    "version": "1.0",
    "description": "Analyzes sentiment of input text",
    "steps": [
        {
            "id": "analyze",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "Analyze sentiment (positive/negative/neutral): {{input}}",
            "temperature": 0.3,
            "max_tokens": 50,
            "output": ["sentiment"],
        }
    ],
    "timeout_seconds": 300,
}

RAG = RAG_WORKFLOW


def llm(step_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": step_id, "type": "llm", "provider": "openai", "model": "gpt-4", "prompt": "Hi"}
    return {**base, **fields}


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": step_id, "type": "embed", "provider": "openai", "model": "m", "input": "x"}
    return {**base, **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": list(steps), **fields}


def errors_of(data: Any) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(data)
    assert caught.value.message == "Invalid workflow definition"
    return caught.value.errors


def only_error(data: Any) -> FieldError:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


# --- valid definitions -------------------------------------------------------------------


def test_the_spec_sentiment_workflow_parses() -> None:
    definition = parse_definition(SENTIMENT)

    analyze = definition.steps[0]
    assert isinstance(analyze, LlmStep)
    assert (analyze.provider, analyze.temperature, analyze.max_tokens) == ("openai", 0.3, 50)
    assert definition.timeout_seconds == 300
    assert definition.required_inputs() == ["input"]


def test_the_spec_rag_workflow_parses_with_one_input() -> None:
    definition = parse_definition(RAG)

    embed, search, answer = definition.steps
    assert isinstance(embed, EmbedStep)
    assert isinstance(search, VectorSearchStep) and search.top_k == 5
    assert isinstance(answer, LlmStep)
    assert definition.required_inputs() == ["query"]


def test_defaults_are_filled_in() -> None:
    search = {"id": "a", "type": "vector_search", "database": "qdrant", "index": "i", "query": "q"}

    definition = parse_definition(workflow(search))

    assert definition.version == "1.0"
    assert definition.description is None
    assert definition.timeout_seconds == DEFAULT_WORKFLOW_TIMEOUT_SECONDS == 3600
    search = definition.steps[0]
    assert isinstance(search, VectorSearchStep)
    assert (search.top_k, search.depends_on, search.output, search.retry) == (5, [], [], None)


def test_an_explicit_null_timeout_means_the_default() -> None:
    definition = parse_definition(workflow(step("a"), timeout_seconds=None))

    assert definition.timeout_seconds == DEFAULT_WORKFLOW_TIMEOUT_SECONDS


def test_required_inputs_are_sorted_and_include_filter_variables() -> None:
    definition = parse_definition(
        workflow(
            step("a", input="{{zeta}} {{alpha}}", output=["made"]),
            {
                "id": "b",
                "type": "vector_search",
                "database": "pgvector",
                "index": "docs",
                "query": "{{made}}",
                "filter": {"tenant": "{{tenant}}", "tag": "{{tag}}"},
                "depends_on": ["a"],
            },
        )
    )

    assert definition.required_inputs() == ["alpha", "tag", "tenant", "zeta"]


def test_a_variable_from_a_transitive_ancestor_is_allowed() -> None:
    parse_definition(
        workflow(
            step("a", output=["x"]),
            step("b", depends_on=["a"]),
            step("c", depends_on=["b"], input="{{x}}"),
        )
    )


# --- the steps list ----------------------------------------------------------------------


def test_empty_steps_are_rejected_with_the_spec_message() -> None:
    assert only_error(workflow()) == FieldError("steps", "Steps array cannot be empty")


def test_more_than_1000_steps_are_rejected() -> None:
    error = only_error(workflow(*(step(f"s{i}") for i in range(1001))))

    assert error.field == "steps"
    assert "at most 1000 steps" in error.message


def test_exactly_1000_steps_are_accepted() -> None:
    assert len(parse_definition(workflow(*(step(f"s{i}") for i in range(1000)))).steps) == 1000


def test_a_definition_that_is_not_an_object_is_rejected() -> None:
    assert only_error(["steps"]) == FieldError("definition", "must be a JSON object")


def test_a_step_that_is_not_an_object_is_rejected() -> None:
    assert only_error(workflow(step("a"), 5)) == FieldError("steps[1]", "must be a JSON object")


def test_missing_name_is_reported() -> None:
    assert only_error({"steps": [step("a")]}) == FieldError("name", "field required")


# --- field rules -------------------------------------------------------------------------


def test_unknown_step_type_names_the_allowed_types() -> None:
    error = only_error(workflow({"id": "a", "type": "sql"}))

    assert error.field == "steps[0].type"
    assert error.message == (
        "unknown step type 'sql'; must be one of 'llm', 'embed', 'vector_upsert', 'vector_search'"
    )


def test_missing_step_type_names_the_allowed_types() -> None:
    error = only_error(workflow({"id": "a"}))

    assert error.field == "steps[0].type"
    assert error.message.startswith("field required; must be one of 'llm'")


def test_unknown_llm_provider_names_the_allowed_providers() -> None:
    assert only_error(workflow(llm("a", provider="gemini"))) == FieldError(
        "steps[0].provider",
        "unknown provider 'gemini'; must be one of 'openai', 'anthropic' or 'cohere'",
    )


def test_embed_steps_do_not_accept_anthropic() -> None:
    error = only_error(workflow(step("a", provider="anthropic")))

    assert error == FieldError(
        "steps[0].provider",
        "provider 'anthropic' does not offer embeddings; must be one of 'openai' or 'cohere'",
    )


def test_unknown_database_names_the_allowed_databases() -> None:
    search = {"id": "a", "type": "vector_search", "database": "redis", "index": "i", "query": "q"}

    error = only_error(workflow(search))

    assert error.field == "steps[0].database"
    assert error.message == (
        "unknown database 'redis'; must be one of 'pinecone', 'weaviate', 'qdrant' or 'pgvector'"
    )


def test_unknown_fields_are_rejected_at_every_level() -> None:
    errors = errors_of(
        workflow(
            llm("a", max_token=5, retry={"max_attempts": 2, "jitter": True}),
            owner="me",
        )
    )

    assert {(e.field, e.message) for e in errors} == {
        ("steps[0].max_token", "unknown field"),
        ("steps[0].retry.jitter", "unknown field"),
        ("owner", "unknown field"),
    }


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"temperature": 2.5}, "steps[0].temperature", "less than or equal to 2"),
        ({"temperature": -0.1}, "steps[0].temperature", "greater than or equal to 0"),
        ({"max_tokens": 0}, "steps[0].max_tokens", "greater than or equal to 1"),
        ({"max_tokens": 200_001}, "steps[0].max_tokens", "less than or equal to 200000"),
        ({"timeout_seconds": 0}, "steps[0].timeout_seconds", "greater than or equal to 1"),
        ({"timeout_seconds": 86_401}, "steps[0].timeout_seconds", "less than or equal to 86400"),
        ({"retry": {"max_attempts": 11}}, "steps[0].retry.max_attempts", "less than or equal"),
        ({"retry": {"max_attempts": 0}}, "steps[0].retry.max_attempts", "greater than or equal"),
        ({"retry": {"backoff_seconds": 0}}, "steps[0].retry.backoff_seconds", "greater than"),
        ({"retry": {"backoff_rate": 0.5}}, "steps[0].retry.backoff_rate", "greater than"),
        ({"prompt": "x" * 100_001}, "steps[0].prompt", "at most 100000 characters"),
        ({"prompt": ""}, "steps[0].prompt", "at least 1 character"),
        ({"max_tokens": "50"}, "steps[0].max_tokens", "valid integer"),
    ],
)
def test_out_of_range_step_fields_are_rejected(
    fields: dict[str, Any], field: str, message: str
) -> None:
    error = only_error(workflow(llm("a", **fields)))

    assert error.field == field
    assert message in error.message


def test_top_k_is_bounded() -> None:
    search = {"id": "a", "type": "vector_search", "database": "qdrant", "index": "i", "query": "q"}

    assert only_error(workflow({**search, "top_k": 1001})).field == "steps[0].top_k"
    assert only_error(workflow({**search, "top_k": 0})).field == "steps[0].top_k"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 129}, "name"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 31_536_001}, "timeout_seconds"),
        ({"version": ""}, "version"),
    ],
)
def test_out_of_range_workflow_fields_are_rejected(fields: dict[str, Any], field: str) -> None:
    assert only_error({**workflow(step("a")), **fields}).field == field


@pytest.mark.parametrize("bad_id", ["1abc", "a__b", "_a", "a b", "a.b", "", "a" * 65])
def test_step_ids_must_be_identifier_like(bad_id: str) -> None:
    error = only_error(workflow(step(bad_id)))

    assert error.field == "steps[0].id"


def test_a_step_id_with_double_underscore_gets_an_explanation() -> None:
    error = only_error(workflow(step("a__b")))

    assert "never two '_' in a row" in error.message


@pytest.mark.parametrize("good_id", ["a", "A-1", "step_1_", "x" * 64, "snake_case-and-kebab"])
def test_identifier_like_step_ids_are_accepted(good_id: str) -> None:
    parse_definition(workflow(step(good_id)))


def test_done_is_a_reserved_step_id() -> None:
    assert only_error(workflow(step("Done"))) == FieldError(
        "steps[0].id", "step id 'Done' is reserved"
    )


def test_output_names_must_be_variable_names() -> None:
    error = only_error(workflow(step("a", output=["ok", "not-ok"])))

    assert error.field == "steps[0].output[1]"
    assert "variable name" in error.message


def test_messages_carry_no_pydantic_links() -> None:
    errors = errors_of(workflow(llm("a", temperature=9, provider="x"), extra=1))

    assert all("pydantic" not in e.message and "http" not in e.message for e in errors)


# --- graph rules -------------------------------------------------------------------------


def test_duplicate_step_ids_point_at_the_second_use() -> None:
    assert only_error(workflow(step("a"), step("b"), step("a"))) == FieldError(
        "steps[2].id", "duplicate step id 'a' (already used by steps[0])"
    )


def test_unknown_dependency_is_reported_at_its_position() -> None:
    assert only_error(workflow(step("a"), step("b", depends_on=["a", "ghost"]))) == FieldError(
        "steps[1].depends_on[1]", "unknown step 'ghost'"
    )


def test_self_dependency_is_rejected() -> None:
    assert only_error(workflow(step("a", depends_on=["a"]))) == FieldError(
        "steps[0].depends_on[0]", "step 'a' cannot depend on itself"
    )


def test_a_two_step_cycle_is_named() -> None:
    assert only_error(
        workflow(step("a", depends_on=["b"]), step("b", depends_on=["a"]))
    ) == FieldError("steps[0].depends_on[0]", "cycle: a -> b -> a")


def test_a_longer_cycle_is_named_from_its_first_step() -> None:
    error = only_error(
        workflow(
            step("start"),
            step("c", depends_on=["b", "start"]),
            step("a", depends_on=["c"]),
            step("b", depends_on=["a"]),
            step("downstream", depends_on=["a"]),
        )
    )

    assert error == FieldError("steps[1].depends_on[0]", "cycle: c -> b -> a -> c")


def test_each_independent_cycle_is_reported() -> None:
    errors = errors_of(
        workflow(
            step("a", depends_on=["b"]),
            step("b", depends_on=["a"]),
            step("x", depends_on=["y"]),
            step("y", depends_on=["x"]),
        )
    )

    assert [e.message for e in errors] == ["cycle: a -> b -> a", "cycle: x -> y -> x"]


def test_a_variable_from_a_step_that_is_not_an_ancestor_is_rejected() -> None:
    error = only_error(
        workflow(
            step("a", output=["summary"]),
            llm("b", prompt="Use {{summary}}"),
        )
    )

    assert error == FieldError(
        "steps[1].prompt",
        "'{{summary}}' is an output of step 'a', which is not an ancestor of 'b'; "
        "add it to depends_on",
    )


def test_a_variable_from_a_later_sibling_is_rejected_in_system_and_filter() -> None:
    errors = errors_of(
        workflow(
            step("root", output=["r"]),
            step("sibling", depends_on=["root"], output=["s"]),
            llm("b", system="{{s}}", depends_on=["root"]),
            {
                "id": "c",
                "type": "vector_search",
                "database": "weaviate",
                "index": "i",
                "query": "{{r}}",
                "filter": {"tenant": "{{s}}"},
                "depends_on": ["root"],
            },
        )
    )

    assert [e.field for e in errors] == ["steps[2].system", "steps[3].filter.tenant"]


def test_a_step_cannot_read_its_own_output() -> None:
    assert only_error(workflow(step("a", input="{{mine}}", output=["mine"]))) == FieldError(
        "steps[0].input", "'{{mine}}' is an output of this step"
    )


def test_two_steps_producing_the_same_output_are_ambiguous() -> None:
    assert only_error(workflow(step("a", output=["x"]), step("b", output=["x"]))) == FieldError(
        "steps[1].output[0]",
        "output 'x' is already produced by step 'a' (steps[0]); output names must be unique",
    )


def test_a_step_listing_an_output_twice_is_rejected() -> None:
    assert only_error(workflow(step("a", output=["x", "x"]))) == FieldError(
        "steps[0].output[1]", "duplicate output name 'x'"
    )


def test_field_and_graph_problems_are_reported_together() -> None:
    errors = errors_of(
        workflow(
            llm("a", provider="nope", depends_on=["b"]),
            step("b", depends_on=["a"]),
            step("c", depends_on=["ghost"]),
        )
    )

    assert {e.field for e in errors} == {
        "steps[0].provider",
        "steps[0].depends_on[0]",
        "steps[2].depends_on[0]",
    }


def test_a_malformed_step_still_counts_as_a_known_dependency() -> None:
    # The bad provider is the only problem: 'b' depending on 'a' is fine.
    errors = errors_of(workflow(llm("a", provider="nope"), step("b", depends_on=["a"])))

    assert [e.field for e in errors] == ["steps[0].provider"]


# --- graph helpers -----------------------------------------------------------------------


def test_topological_levels_use_the_longest_path_and_definition_order() -> None:
    definition = parse_definition(
        workflow(
            step("d", depends_on=["b", "c"]),
            step("c", depends_on=["a", "b"]),
            step("b", depends_on=["a"]),
            step("e", depends_on=["a"]),
            step("a"),
            step("z"),
        )
    )

    assert topological_levels(definition) == [["a", "z"], ["b", "e"], ["c"], ["d"]]


def test_ancestors_are_transitive() -> None:
    definition = parse_definition(
        workflow(step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"]), step("x"))
    )

    assert ancestors(definition) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a", "b"}),
        "x": frozenset(),
    }


def test_definitions_are_immutable() -> None:
    definition = parse_definition(SENTIMENT)

    with pytest.raises(ValueError):
        definition.name = "other"  # type: ignore[misc]


def test_a_long_chain_below_a_cycle_reports_only_the_cycle() -> None:
    chain = [step(f"s{i}", depends_on=[f"s{i - 1}"]) for i in range(2, 1000)]

    errors = errors_of(
        workflow(step("s0", depends_on=["s1"]), step("s1", depends_on=["s0"]), *chain)
    )

    assert errors == [FieldError("steps[0].depends_on[0]", "cycle: s0 -> s1 -> s0")]


def test_parse_definition_also_checks_the_graph_of_a_model_instance() -> None:
    unchecked = WorkflowDefinition.model_validate(
        workflow(step("a", depends_on=["b"]), step("b", depends_on=["a"]))
    )

    with pytest.raises(ValidationFailed):
        parse_definition(unchecked)


def test_graph_queries_refuse_a_definition_that_skipped_validation() -> None:
    cyclic = WorkflowDefinition.model_validate(
        workflow(step("a", depends_on=["b"]), step("b", depends_on=["a"]))
    )
    dangling = WorkflowDefinition.model_validate(workflow(step("a", depends_on=["ghost"])))

    with pytest.raises(ValueError, match="cycle"):
        topological_levels(cyclic)
    with pytest.raises(ValueError, match="ghost"):
        ancestors(dangling)
