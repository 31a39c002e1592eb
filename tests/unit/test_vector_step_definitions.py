"""Definitions with vector_upsert and vector_search steps: what create time refuses."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.errors import FieldError, ValidationFailed
from llm_orchestrator.workflows import VectorUpsertStep, parse_definition


def embed() -> dict[str, Any]:
    return {
        "id": "embed",
        "type": "embed",
        "provider": "openai",
        "model": "m",
        "input": "{{documents}}",
        "output": ["vectors"],
    }


def upsert(**fields: Any) -> dict[str, Any]:
    return {
        "id": "store",
        "type": "vector_upsert",
        "database": "pgvector",
        "index": "kb",
        "vectors": "{{vectors}}",
        "documents": "{{documents}}",
        "depends_on": ["embed"],
        "output": ["ids"],
        **fields,
    }


def search(**fields: Any) -> dict[str, Any]:
    return {
        "id": "search",
        "type": "vector_search",
        "database": "pgvector",
        "index": "kb",
        "query": "{{vectors}}",
        "depends_on": ["embed"],
        **fields,
    }


def errors_of(*steps: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition({"name": "w", "steps": list(steps)})
    return caught.value.errors


def test_an_ingest_workflow_is_accepted_and_needs_only_the_documents() -> None:
    definition = parse_definition(
        {"name": "ingest", "steps": [embed(), upsert(namespace="{{tenant}}")]}
    )

    store = definition.step("store")
    assert isinstance(store, VectorUpsertStep)
    assert store.namespace == "{{tenant}}"
    assert definition.required_inputs() == ["documents", "tenant"]


@pytest.mark.parametrize("field", ["vectors", "documents"])
def test_vectors_and_documents_must_each_be_one_variable(field: str) -> None:
    errors = errors_of(embed(), upsert(**{field: "docs: {{documents}}"}))

    assert [e.field for e in errors] == [f"steps[1].{field}"]
    assert errors[0].message.startswith("must be exactly one {{variable}} naming a list of")


def test_upsert_needs_database_index_vectors_and_documents() -> None:
    step = {"id": "store", "type": "vector_upsert"}

    errors = errors_of(step)

    assert {e.field: e.message for e in errors} == {
        "steps[0].database": "field required",
        "steps[0].index": "field required",
        "steps[0].vectors": "field required",
        "steps[0].documents": "field required",
    }


def test_an_unknown_database_is_refused_for_upserts() -> None:
    errors = errors_of(embed(), upsert(database="redis"))

    assert [e.field for e in errors] == ["steps[1].database"]


def test_a_pinecone_index_name_must_follow_pinecone_rules() -> None:
    errors = errors_of(embed(), upsert(database="pinecone", index="Knowledge_Base"))

    assert errors == [
        FieldError(
            "steps[1].index",
            "a Pinecone index name has 1-45 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    ]


def test_a_qdrant_collection_name_may_not_hold_a_slash() -> None:
    errors = errors_of(embed(), search(database="qdrant", index="a/b"))

    assert [e.field for e in errors] == ["steps[1].index"]


def test_pgvector_and_weaviate_take_any_printable_index_name() -> None:
    for database in ("pgvector", "weaviate"):
        parse_definition(
            {"name": "w", "steps": [embed(), upsert(database=database, index='Ünï "kb"; drop')]}
        )


def test_an_index_name_with_a_control_character_is_refused() -> None:
    errors = errors_of(embed(), upsert(index="kb\n"))

    assert errors == [FieldError("steps[1].index", "must not contain control characters")]


def test_a_filter_compares_scalars_only() -> None:
    errors = errors_of(embed(), search(filter={"tags": ["a"]}))

    assert errors == [
        FieldError(
            "steps[1].filter", "filter 'tags': metadata equality takes a string, number or boolean"
        )
    ]


def test_a_namespace_variable_must_come_from_an_ancestor() -> None:
    other = {**embed(), "id": "other", "output": ["ns"]}

    errors = errors_of(embed(), other, search(namespace="{{ns}}"))

    assert [e.field for e in errors] == ["steps[2].namespace"]


@pytest.mark.parametrize("database", ["pgvector", "qdrant"])
def test_ef_search_is_taken_by_the_databases_that_search_with_it(database: str) -> None:
    definition = parse_definition(
        {"name": "w", "steps": [embed(), search(database=database, ef_search=200)]}
    )

    assert definition.steps[1].ef_search == 200  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [0, 1001, "64", 12.5])
def test_ef_search_outside_1_to_1000_is_refused(value: Any) -> None:
    errors = errors_of(embed(), search(ef_search=value))

    assert [e.field for e in errors] == ["steps[1].ef_search"]


@pytest.mark.parametrize("database", ["pinecone", "weaviate"])
def test_ef_search_is_refused_where_a_query_cannot_set_it(database: str) -> None:
    errors = errors_of(embed(), search(database=database, ef_search=100))

    assert errors == [
        FieldError(
            "steps[1].ef_search",
            f"{database} has no per-query HNSW setting: ef_search is for pgvector and qdrant",
        )
    ]
