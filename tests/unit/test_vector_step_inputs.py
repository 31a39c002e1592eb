"""What a vector step accepts at run time, after its templates are rendered."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.steps.errors import StepConfigurationError
from llm_orchestrator.steps.vectors import (
    document_id,
    query_vector,
    search_filter,
    upsert_records,
)


def test_documents_without_ids_get_the_hash_of_their_text() -> None:
    records = upsert_records([[1.0, 0.0], [0.0, 1.0]], ["a", {"text": "b", "metadata": {"k": 1}}])

    assert [r.id for r in records] == [document_id("a"), document_id("b")]
    assert document_id("a") == document_id("a") != document_id("b")
    assert records[1].metadata == {"k": 1}
    assert records[0].vector == [1.0, 0.0]


def test_a_given_id_is_kept() -> None:
    (record,) = upsert_records([[1, 2]], [{"id": "doc-7", "text": "t"}])

    assert record.id == "doc-7"
    assert record.vector == [1.0, 2.0]


@pytest.mark.parametrize(
    ("vectors", "documents", "message"),
    [
        ([[1.0]], ["a", "b"], "vectors has 1 entries but documents has 2"),
        ([[1.0, 2.0], [1.0]], ["a", "b"], "vectors[1] has 1 dimensions but vectors[0] has 2"),
        ([[1.0, "x"]], ["a"], "vectors[0][1] is a string, not a number"),
        ([[1.0, True]], ["a"], "vectors[0][1] is a boolean, not a number"),
        ([[1.0, float("nan")]], ["a"], "vectors[0][1] is not a finite number"),
        ([[1.0, float("inf")]], ["a"], "vectors[0][1] is not a finite number"),
        ([[1.0, 1e39]], ["a"], "vectors[0][1] is not a finite number"),
        ([[0.0, 0.0]], ["a"], "vectors[0] is all zeros"),
        ([[]], ["a"], "vectors[0] must be a non-empty list of numbers, got an empty list"),
        ([1.0, 2.0], ["a", "b"], "vectors is one vector, not a list of vectors"),
        ("[1, 2]", ["a"], "vectors must be a list of vectors, got a string"),
        ([[1.0]], "a", "documents must be a list, got a string"),
        ([], [], "there is nothing to upsert"),
        ([[1.0]], [7], "documents[0] must be a string or an object"),
        ([[1.0]], [{"text": 1}], "documents[0].text must be a string"),
        ([[1.0]], [{"text": "t", "metadata": []}], "documents[0].metadata must be an object"),
        ([[1.0]], [{"text": "t", "id": ""}], "documents[0].id must be a non-empty string"),
        ([[1.0]], [{"text": "t", "body": "x"}], "documents[0] has unknown field(s): body"),
    ],
)
def test_bad_upsert_input_is_a_permanent_error_naming_the_fault(
    vectors: Any, documents: Any, message: str
) -> None:
    with pytest.raises(StepConfigurationError) as caught:
        upsert_records(vectors, documents)

    assert message in str(caught.value)


def test_a_query_must_be_a_vector_not_text() -> None:
    with pytest.raises(StepConfigurationError, match="query must be an embedding vector"):
        query_vector("what is the capital of France?")


def test_a_one_item_batch_of_vectors_is_a_query() -> None:
    assert query_vector([[0.5, 0.5]]) == [0.5, 0.5]


def test_a_filter_value_rendered_into_a_list_is_refused() -> None:
    with pytest.raises(StepConfigurationError, match="filter 'tags' must be a string, number"):
        search_filter({"tags": ["a", "b"]})


def test_a_filter_keeps_scalars() -> None:
    assert search_filter({"lang": "en", "year": 2024, "draft": False}) == {
        "lang": "en",
        "year": 2024,
        "draft": False,
    }
