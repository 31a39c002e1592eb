"""What ``vector_upsert`` and ``vector_search`` steps hand a vector store, checked.

The values come from workflow inputs and earlier steps' outputs, so anything is possible
at run time; every problem becomes a ``StepConfigurationError`` that names the position
and the fault, a permanent failure (no retry makes bad data good).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from llm_orchestrator.steps.errors import StepConfigurationError
from llm_orchestrator.vectorstores.base import FilterValue, VectorRecord

__all__ = [
    "MAX_DIMENSIONS",
    "MAX_ID_CHARS",
    "MAX_UPSERT_RECORDS",
    "document_id",
    "query_vector",
    "search_filter",
    "search_namespace",
    "upsert_records",
]

MAX_UPSERT_RECORDS = 10_000
MAX_DIMENSIONS = 16_000
"""pgvector's own ceiling for ``vector(n)``; no embedding model comes near it."""
MAX_ID_CHARS = 512
"""Pinecone's limit on an id, the tightest of the four databases."""
_FLOAT32_MAX = 3.4028234663852886e38
"""Every database stores 32-bit floats; a larger value would turn into infinity there."""


def document_id(text: str) -> str:
    """The id of a document given without one: a hash of its text, so re-running an
    ingest updates the same records instead of adding copies."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def upsert_records(vectors: Any, documents: Any) -> list[VectorRecord]:
    """Pair ``vectors[i]`` with ``documents[i]``; documents are strings or
    ``{id?, text, metadata?}`` objects."""
    if not isinstance(vectors, list):
        raise StepConfigurationError(f"vectors must be a list of vectors, got {_kind(vectors)}")
    if not isinstance(documents, list):
        raise StepConfigurationError(f"documents must be a list, got {_kind(documents)}")
    if vectors and all(_is_number(item) for item in vectors):
        raise StepConfigurationError(
            "vectors is one vector, not a list of vectors: embed a list of documents"
        )
    if len(vectors) != len(documents):
        raise StepConfigurationError(
            f"vectors has {len(vectors)} entries but documents has {len(documents)};"
            " they pair up by position"
        )
    if not vectors:
        raise StepConfigurationError("there is nothing to upsert: vectors and documents are empty")
    if len(vectors) > MAX_UPSERT_RECORDS:
        raise StepConfigurationError(
            f"at most {MAX_UPSERT_RECORDS} documents per upsert, got {len(vectors)}"
        )
    records: list[VectorRecord] = []
    dimension: int | None = None
    for position, (vector, document) in enumerate(zip(vectors, documents, strict=True)):
        checked = _vector(vector, f"vectors[{position}]")
        if dimension is None:
            dimension = len(checked)
        elif len(checked) != dimension:
            raise StepConfigurationError(
                f"vectors[{position}] has {len(checked)} dimensions but vectors[0] has"
                f" {dimension}: every vector of an index has the same size"
            )
        records.append(_record(document, checked, f"documents[{position}]"))
    return records


def query_vector(value: Any) -> list[float]:
    """A search query must be an embedding: a list of numbers."""
    if isinstance(value, str):
        raise StepConfigurationError(
            "query must be an embedding vector ('{{variable}}' naming an embed step's output),"
            " not text"
        )
    if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
        if len(value) == 1:
            return _vector(value[0], "query")
        raise StepConfigurationError(f"query is a list of {len(value)} vectors; a search takes one")
    return _vector(value, "query")


def search_filter(value: Any) -> dict[str, FilterValue] | None:
    """Metadata equality: ``{key: scalar}`` after rendering (a ``{{var}}`` may be anything)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise StepConfigurationError(f"filter must be an object, got {_kind(value)}")
    checked: dict[str, FilterValue] = {}
    for key, item in value.items():
        if isinstance(item, bool | str) or (_is_number(item) and math.isfinite(item)):
            checked[str(key)] = item
        else:
            raise StepConfigurationError(
                f"filter '{key}' must be a string, number or boolean, got {_kind(item)}"
            )
    return checked


def search_namespace(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if len(text) > 512:
        raise StepConfigurationError("namespace must be at most 512 characters")
    return text or None


def _record(document: Any, vector: list[float], where: str) -> VectorRecord:
    if isinstance(document, str):
        return VectorRecord(document_id(document), vector, document, {})
    if not isinstance(document, Mapping):
        raise StepConfigurationError(
            f"{where} must be a string or an object {{id?, text, metadata?}}, got {_kind(document)}"
        )
    unknown = sorted(set(document) - {"id", "text", "metadata"})
    if unknown:
        raise StepConfigurationError(f"{where} has unknown field(s): {', '.join(unknown)}")
    text = document.get("text")
    if not isinstance(text, str):
        raise StepConfigurationError(f"{where}.text must be a string")
    metadata = document.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise StepConfigurationError(f"{where}.metadata must be an object")
    given = document.get("id")
    if given is None:
        record_id = document_id(text)
    elif isinstance(given, str) and 0 < len(given) <= MAX_ID_CHARS:
        record_id = given
    elif isinstance(given, int) and not isinstance(given, bool):
        record_id = str(given)
    else:
        raise StepConfigurationError(
            f"{where}.id must be a non-empty string of at most {MAX_ID_CHARS} characters"
        )
    return VectorRecord(record_id, vector, text, dict(metadata))


def _vector(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise StepConfigurationError(
            f"{where} must be a non-empty list of numbers, got {_kind(value)}"
        )
    if len(value) > MAX_DIMENSIONS:
        raise StepConfigurationError(
            f"{where} has {len(value)} dimensions; at most {MAX_DIMENSIONS}"
        )
    for position, item in enumerate(value):
        if not _is_number(item):
            raise StepConfigurationError(f"{where}[{position}] is {_kind(item)}, not a number")
        if not math.isfinite(item) or abs(item) > _FLOAT32_MAX:
            raise StepConfigurationError(f"{where}[{position}] is not a finite number")
    if not any(value):
        raise StepConfigurationError(f"{where} is all zeros: cosine similarity needs a direction")
    return [float(item) for item in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
