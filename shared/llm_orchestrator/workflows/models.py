"""Workflow definition models: the shape of a definition, checked field by field.

These models check each field on its own. The rules that need the whole graph
(duplicate ids, unknown dependencies, cycles, where a ``{{var}}`` comes from) live in
:mod:`llm_orchestrator.workflows.validation`; untrusted input goes through
``parse_definition``, which runs both and reports every problem at once. The graph
queries at the end (levels, ancestors) assume a definition that passed it.

Every model forbids unknown fields, so a typo such as ``"max_token"`` is an error rather
than a silently ignored setting, and is strict, so ``"5"`` is not accepted as ``5``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from llm_orchestrator.jsonvalues import whole_numbers_as_integers
from llm_orchestrator.workflows.templating import find_variables, whole_variable

__all__ = [
    "DEFAULT_WORKFLOW_TIMEOUT_SECONDS",
    "EMBEDDING_DIMENSIONS",
    "EMBEDDING_PROVIDERS",
    "LLM_PROVIDERS",
    "MAX_STEPS",
    "MAX_TEMPLATE_CHARS",
    "OUTPUT_NAME_PATTERN",
    "STEP_ID_PATTERN",
    "STEP_TYPES",
    "VECTOR_DATABASES",
    "EmbedFallback",
    "EmbedStep",
    "LlmFallback",
    "LlmStep",
    "RetryPolicy",
    "Step",
    "VectorSearchStep",
    "VectorUpsertStep",
    "WorkflowDefinition",
    "ancestor_masks",
    "ancestors",
    "iter_data_templates",
    "parent_indexes",
    "topological_levels",
    "topological_order",
]

DEFAULT_WORKFLOW_TIMEOUT_SECONDS = 3600
"""A workflow without ``timeout_seconds`` may run for one hour."""
MAX_WORKFLOW_TIMEOUT_SECONDS = 31_536_000
"""One year: the longest a Step Functions standard execution may run."""
MAX_STEP_TIMEOUT_SECONDS = 86_400
MAX_STEPS = 1000
MAX_TEMPLATE_CHARS = 100_000
MAX_FALLBACKS = 5
"""Entries of a step's ``fallback`` chain: each is one more call inside the step's last attempt."""

STEP_ID_PATTERN = r"^[A-Za-z](?:_?[A-Za-z0-9-])*_?$"
"""A letter, then letters, digits, ``-`` and single ``_``.

``__`` is excluded because the compiler names a step's helper states ``<id>__paused``
and so on; without it those names could collide with another step's id.
"""
STEP_ID_MAX_CHARS = 64
"""Keeps ``<id>__cancelled`` within Step Functions' 80-character state-name limit."""
OUTPUT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Outputs are referenced as ``{{name}}``, so they follow the template variable syntax."""

STEP_TYPES = ("llm", "embed", "vector_upsert", "vector_search")
VECTOR_DATABASES = ("pinecone", "weaviate", "qdrant", "pgvector")
LLM_PROVIDERS = ("openai", "anthropic", "cohere")
EMBEDDING_PROVIDERS = ("openai", "cohere")
"""Anthropic offers no embeddings: an ``embed`` step naming it is refused at create time."""

EMBEDDING_DIMENSIONS: Mapping[tuple[str, str], int] = MappingProxyType(
    {
        ("openai", "text-embedding-3-small"): 1536,
        ("openai", "text-embedding-3-large"): 3072,
        ("openai", "text-embedding-ada-002"): 1536,
        ("cohere", "embed-english-v3.0"): 1024,
        ("cohere", "embed-multilingual-v3.0"): 1024,
        ("cohere", "embed-english-light-v3.0"): 384,
        ("cohere", "embed-multilingual-light-v3.0"): 384,
        ("cohere", "embed-v4.0"): 1536,
    }
)
"""Vector sizes of embedding models at their default settings: an ``embed`` step's
fallbacks must produce the same size as its primary."""

StepId = Annotated[str, Field(max_length=STEP_ID_MAX_CHARS, pattern=STEP_ID_PATTERN)]
StepRef = Annotated[str, Field(max_length=STEP_ID_MAX_CHARS)]
OutputName = Annotated[str, Field(max_length=64, pattern=OUTPUT_NAME_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Template = Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)]
VectorDatabase = Literal["pinecone", "weaviate", "qdrant", "pgvector"]
IndexName = Annotated[str, Field(min_length=1, max_length=256)]
Namespace = Annotated[str, Field(min_length=1, max_length=512)]

PINECONE_INDEX_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")
"""Pinecone's own rule for index names: lower-case letters, digits and '-', at most 45."""
_QDRANT_FORBIDDEN = re.compile(r'[/\\:*?"<>|\x00-\x1f]')
"""Characters Qdrant refuses in a collection name (it becomes a directory name there)."""
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _check_index(value: str, info: ValidationInfo) -> str:
    """Index names are data, but each database has its own idea of a valid one: say so at
    create time rather than when the first execution reaches the database."""
    database = info.data.get("database")
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    if database == "pinecone" and not PINECONE_INDEX_PATTERN.match(value):
        raise ValueError(
            "a Pinecone index name has 1-45 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if database == "qdrant" and (len(value) > 255 or _QDRANT_FORBIDDEN.search(value)):
        raise ValueError(
            'a Qdrant collection name has at most 255 characters, none of / \\ : * ? " < > |'
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        # JSON's 3.0 is the integer 3; "3" and 3.5 stay errors.
        return whole_numbers_as_integers(cls, data)


class RetryPolicy(_Model):
    """How a step retries transient provider failures (rate limits, outages).

    ``max_attempts`` counts every call including the first, so ``1`` means no retry.
    Waits grow from ``backoff_seconds`` by ``backoff_rate`` per attempt, with full jitter.
    """

    max_attempts: int = Field(3, ge=1, le=10)
    backoff_seconds: int = Field(2, ge=1, le=3600)
    backoff_rate: float = Field(2.0, ge=1.0, le=10.0)


class _StepBase(_Model, ABC):
    id: StepId
    depends_on: list[StepRef] = Field(default_factory=list, max_length=MAX_STEPS)
    output: list[OutputName] = Field(default_factory=list, max_length=64)
    retry: RetryPolicy | None = None
    timeout_seconds: int | None = Field(None, ge=1, le=MAX_STEP_TIMEOUT_SECONDS)

    @abstractmethod
    def templates(self) -> Iterator[tuple[str, str]]:
        """``(field path relative to the step, text)`` for every templated string."""

    def variables(self) -> list[str]:
        """Every ``{{var}}`` this step reads, each once."""
        names: dict[str, None] = {}
        for _, text in self.templates():
            names.update(dict.fromkeys(find_variables(text)))
        return list(names)


class LlmFallback(_Model):
    """Another provider and model for an ``llm`` step, tried when the ones before it ended
    retryable-failed; ``temperature`` / ``max_tokens`` default to the step's own."""

    provider: Literal["openai", "anthropic", "cohere"]
    model: Name
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=200_000)


class EmbedFallback(_Model):
    """Another provider and model for an ``embed`` step (same vector size as the primary)."""

    provider: Literal["openai", "cohere"]
    model: Name


class LlmStep(_StepBase):
    """A chat completion. ``prompt`` and ``system`` are templates."""

    type: Literal["llm"]
    provider: Literal["openai", "anthropic", "cohere"]
    model: Name
    prompt: Template
    system: Annotated[str, Field(max_length=MAX_TEMPLATE_CHARS)] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1, le=200_000)
    fallback: list[LlmFallback] | None = Field(None, max_length=MAX_FALLBACKS)
    output_schema: dict[str, Any] | None = Field(
        None,
        description=(
            "A JSON Schema (type object) the reply must match, asked for through the "
            "provider's native structured output; one output name takes the whole object, "
            "several take its fields of the same names. Several output names without it "
            "ask for an object of those names as required strings."
        ),
    )

    def templates(self) -> Iterator[tuple[str, str]]:
        yield "prompt", self.prompt
        if self.system is not None:
            yield "system", self.system


class EmbedStep(_StepBase):
    """An embedding. ``input`` is a template; exactly ``{{var}}`` passes the raw value.

    ``input_type`` is Cohere's (what the vectors will be used as); without it, a list of
    texts embeds as ``search_document`` and a single text as ``search_query``.
    """

    type: Literal["embed"]
    provider: Literal["openai", "cohere"]
    model: Name
    input: Template
    input_type: (
        Literal["search_document", "search_query", "classification", "clustering"] | None
    ) = None
    fallback: list[EmbedFallback] | None = Field(None, max_length=MAX_FALLBACKS)

    def templates(self) -> Iterator[tuple[str, str]]:
        yield "input", self.input


class VectorUpsertStep(_StepBase):
    """Writes documents and their vectors into an index, creating the index if the
    database lets us (all but Pinecone). Its output value is the list of ids written.

    ``vectors`` and ``documents`` are each exactly one ``{{var}}``: a list of vectors (an
    ``embed`` step's output) and a list of strings or of ``{id?, text, metadata?}``
    objects, paired by position. ``namespace`` is a template.
    """

    type: Literal["vector_upsert"]
    database: VectorDatabase
    index: IndexName
    vectors: Template
    documents: Template
    namespace: Namespace | None = None

    index_rules = field_validator("index")(_check_index)

    @field_validator("vectors", "documents")
    @classmethod
    def _one_variable(cls, value: str, info: ValidationInfo) -> str:
        if whole_variable(value) is None:
            what = "a list of vectors" if info.field_name == "vectors" else "a list of documents"
            raise ValueError(f"must be exactly one {{{{variable}}}} naming {what}")
        return value

    def templates(self) -> Iterator[tuple[str, str]]:
        yield "vectors", self.vectors
        yield "documents", self.documents
        if self.namespace is not None:
            yield "namespace", self.namespace


class VectorSearchStep(_StepBase):
    """A nearest-neighbour search; its output value is a list of matches
    ``{id, score, text, metadata}``, best first, higher scores more similar.

    ``query`` is a template; exactly ``{{var}}`` passes the raw value, which is how an
    embedding vector reaches the search. ``filter`` is metadata equality
    (``{"lang": "en"}``); its string values are templates too, as is ``namespace``.

    ``ef_search`` (optional, 1-1000) is the HNSW search's candidate list on the databases
    that take one per query: pgvector (``hnsw.ef_search``, default 40) and Qdrant
    (``hnsw_ef``). Larger finds the true nearest documents more often and costs time in
    proportion (see the README's *Performance*); at least ``top_k`` candidates are always
    searched. Pinecone and Weaviate have no such per-query setting: refused for them.
    """

    type: Literal["vector_search"]
    database: VectorDatabase
    index: IndexName
    query: Template
    top_k: int = Field(5, ge=1, le=1000)
    ef_search: int | None = Field(None, ge=1, le=1000)
    filter: dict[str, Any] | None = None
    namespace: Namespace | None = None

    index_rules = field_validator("index")(_check_index)

    @field_validator("ef_search")
    @classmethod
    def _per_query_ef(cls, value: int | None, info: ValidationInfo) -> int | None:
        database = info.data.get("database")
        if value is not None and database in ("pinecone", "weaviate"):
            raise ValueError(
                f"{database} has no per-query HNSW setting: ef_search is for pgvector and qdrant"
            )
        return value

    @field_validator("filter")
    @classmethod
    def _equality_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if len(value) > 32:
            raise ValueError("at most 32 metadata keys")
        for key, item in value.items():
            if not key or _CONTROL_CHARACTERS.search(key):
                raise ValueError("metadata keys must be non-empty, without control characters")
            if item is None or isinstance(item, dict | list):
                raise ValueError(
                    f"filter '{key}': metadata equality takes a string, number or boolean"
                )
        return value

    def templates(self) -> Iterator[tuple[str, str]]:
        yield "query", self.query
        if self.filter is not None:
            yield from iter_data_templates(self.filter, "filter")
        if self.namespace is not None:
            yield "namespace", self.namespace


AnyStep = LlmStep | EmbedStep | VectorUpsertStep | VectorSearchStep
Step = Annotated[AnyStep, Field(discriminator="type")]


class WorkflowDefinition(_Model):
    """A named DAG of steps; ``timeout_seconds`` bounds a whole execution."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    version: Annotated[str, Field(min_length=1, max_length=32)] = "1.0"
    description: Annotated[str, Field(max_length=4096)] | None = None
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    timeout_seconds: int = Field(
        DEFAULT_WORKFLOW_TIMEOUT_SECONDS, ge=1, le=MAX_WORKFLOW_TIMEOUT_SECONDS
    )

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _null_means_default(cls, value: Any) -> Any:
        # Clients that serialise unset fields as null mean "use the default", not "no limit".
        return DEFAULT_WORKFLOW_TIMEOUT_SECONDS if value is None else value

    def step(self, step_id: str) -> AnyStep:
        for candidate in self.steps:
            if candidate.id == step_id:
                return candidate
        raise KeyError(step_id)

    def producers(self) -> dict[str, str]:
        """Output name → id of the step that produces it."""
        return {name: step.id for step in self.steps for name in step.output}

    def required_inputs(self) -> list[str]:
        """The ``{{var}}`` names no step produces: what an execution must be given."""
        produced = self.producers()
        return sorted(
            {name for step in self.steps for name in step.variables() if name not in produced}
        )


def iter_data_templates(data: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string nested in ``data``, paths like ``filter.tags[0]``."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, item in data.items():
            yield from iter_data_templates(item, f"{path}.{key}")
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from iter_data_templates(item, f"{path}[{index}]")


# --- graph queries over a valid definition ---------------------------------------------


def topological_levels(definition: WorkflowDefinition) -> list[list[str]]:
    """Step ids grouped by depth: level 0 depends on nothing, level n on something in n-1.

    Each step sits at the length of its longest dependency chain, so every step of a
    level can run once all earlier levels are done. Within a level, ids keep definition
    order, which makes the result (and the compiled state machine) deterministic.
    """
    parents = parent_indexes(definition)
    levels_of: list[int] = [0] * len(parents)
    for index in topological_order(parents):
        levels_of[index] = max((levels_of[p] + 1 for p in parents[index]), default=0)
    grouped: list[list[str]] = [[] for _ in range(max(levels_of, default=-1) + 1)]
    for index, step in enumerate(definition.steps):
        grouped[levels_of[index]].append(step.id)
    return grouped


def ancestors(definition: WorkflowDefinition) -> dict[str, frozenset[str]]:
    """Every step's transitive dependencies (the steps that must finish before it)."""
    ids = [step.id for step in definition.steps]
    masks = ancestor_masks(parent_indexes(definition))
    return {
        ids[index]: frozenset(ids[bit] for bit in _bits(mask)) for index, mask in enumerate(masks)
    }


def ancestor_masks(parents: Sequence[Sequence[int]]) -> list[int]:
    """Ancestors of each node as a bit set (bit ``i`` = node ``i``), for an acyclic graph.

    Integers as bit sets keep this linear in practice even for 1,000-step chains, where
    sets of ids would cost a quadratic number of element copies.
    """
    masks = [0] * len(parents)
    for index in topological_order(parents):
        mask = 0
        for parent in parents[index]:
            mask |= masks[parent] | (1 << parent)
        masks[index] = mask
    return masks


def parent_indexes(definition: WorkflowDefinition) -> list[list[int]]:
    """``depends_on`` as step indexes, duplicates removed; raises on an unknown id."""
    index_of = {step.id: index for index, step in enumerate(definition.steps)}
    try:
        return [
            list(dict.fromkeys(index_of[dep] for dep in step.depends_on))
            for step in definition.steps
        ]
    except KeyError as exc:
        raise ValueError(f"depends_on names unknown step {exc.args[0]!r}") from None


def topological_order(parents: Sequence[Sequence[int]]) -> list[int]:
    """A deterministic topological order (Kahn's algorithm); raises on a cycle."""
    children: list[list[int]] = [[] for _ in parents]
    pending = [len(set(own)) for own in parents]
    for child, own in enumerate(parents):
        for parent in set(own):
            children[parent].append(child)
    ready = [index for index, count in enumerate(pending) if count == 0]
    order: list[int] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for child in children[node]:
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if len(order) != len(parents):
        raise ValueError("the dependency graph has a cycle")
    return order


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
