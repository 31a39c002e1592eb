"""Workflow responses. Requests are validated by ``workflows.parse_definition`` so that every
problem is reported with a field path, graph rules included."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from llm_orchestrator.api.schemas.common import PageMeta

if TYPE_CHECKING:
    from llm_orchestrator.store.workflows import WorkflowHeader
    from llm_orchestrator.workflows.service import Workflow


class WorkflowPublic(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    description: str | None
    steps: list[dict[str, Any]]
    timeout_seconds: int
    inputs: list[str]
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowPublic:
        record = workflow.record
        return cls(
            id=record.id,
            name=record.name,
            version=record.version,
            description=record.description,
            steps=list(record.definition["steps"]),
            timeout_seconds=record.timeout_seconds,
            inputs=workflow.definition.required_inputs(),
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.owner_id,
        )


class WorkflowSummary(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def of(cls, record: WorkflowHeader) -> WorkflowSummary:
        return cls(
            id=record.id,
            name=record.name,
            version=record.version,
            description=record.description,
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.owner_id,
        )


class WorkflowList(PageMeta):
    workflows: list[WorkflowSummary]


class StateMachine(BaseModel):
    definition: dict[str, Any]


# --- the definition as the OpenAPI document describes it -------------------------------

# A JSON Schema (ECMA-262) pattern means the same in Python's ``re``: ``[0-9]`` and explicit
# classes rather than ``\d`` and ``\s``, whose Unicode meanings differ between the two.
_SPACE = (
    "[\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680"
    "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
"""Python's ``\\s`` spelled out: what ``{{ name }}`` may be surrounded with."""
WHOLE_VARIABLE_PATTERN = (
    f"^{_SPACE}*\\{{\\{{{_SPACE}*[A-Za-z_][A-Za-z0-9_]*{_SPACE}*\\}}\\}}{_SPACE}*$"
)
NO_CONTROL_PATTERN = "^[^\\u0000-\\u001f\\u007f]+$"
QDRANT_COLLECTION_PATTERN = '^[^\\u0000-\\u001f\\u007f/\\\\:*?"<>|]+$'

GRAPH_RULES = (
    "Rules across steps, checked when the definition is created or replaced (400 "
    "validation_error naming the field): step ids are unique and not 'Done'; depends_on "
    "names other steps of the definition, without cycles; an output name is produced by "
    "one step only; a {{name}} that is some step's output may be used only by the steps "
    "that depend on that step (directly or not); any other {{name}} is a workflow input."
)


def definition_schemas() -> dict[str, dict[str, Any]]:
    """The request body of ``POST``/``PUT /workflows``: ``WorkflowDefinition`` and its steps,
    discriminated by ``type``, as components of the OpenAPI document.

    The models' own JSON Schema plus the rules their validators enforce (index names per
    database, provider capabilities, reserved ids); ``parse_definition`` remains what
    validates a request, so that every problem is reported at once with its field path.
    """
    from llm_orchestrator.workflows.models import (
        MAX_WORKFLOW_TIMEOUT_SECONDS,
        PINECONE_INDEX_PATTERN,
        STEP_ID_MAX_CHARS,
        STEP_ID_PATTERN,
        WorkflowDefinition,
    )
    from llm_orchestrator.workflows.validation import (
        ANTHROPIC_MAX_TEMPERATURE,
        RESERVED_STEP_IDS,
    )

    schema = WorkflowDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, dict[str, Any]] = schema.pop("$defs")
    components["WorkflowDefinition"] = schema
    schema["description"] = f"{schema.get('description', '')} {GRAPH_RULES}".strip()
    # A null timeout_seconds means the default, as unset does.
    timeout = schema["properties"]["timeout_seconds"]
    schema["properties"]["timeout_seconds"] = {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_WORKFLOW_TIMEOUT_SECONDS},
            {"type": "null"},
        ],
        "default": timeout["default"],
        "description": "Seconds an execution may run; null or unset: the default",
    }

    for name in ("LlmStep", "EmbedStep", "VectorUpsertStep", "VectorSearchStep"):
        properties = components[name]["properties"]
        properties["id"]["not"] = {"enum": sorted(RESERVED_STEP_IDS)}
        properties["depends_on"]["items"] = {
            "type": "string",
            "maxLength": STEP_ID_MAX_CHARS,
            "pattern": STEP_ID_PATTERN,
        }
        properties["output"]["uniqueItems"] = True

    llm = components["LlmStep"]
    llm["anyOf"] = [
        {
            "properties": {
                "provider": {"const": "anthropic"},
                "temperature": {
                    "anyOf": [
                        {"type": "number", "minimum": 0, "maximum": ANTHROPIC_MAX_TEMPERATURE},
                        {"type": "null"},
                    ]
                },
            }
        },
        {"properties": {"provider": {"enum": ["openai", "cohere"]}}},
    ]
    llm["properties"]["output_schema"]["anyOf"][0].update(
        {"properties": {"type": {"const": "object"}}, "required": ["type"]}
    )
    embed = components["EmbedStep"]
    embed["anyOf"] = [
        {"properties": {"provider": {"const": "cohere"}}},
        {"properties": {"provider": {"const": "openai"}, "input_type": {"type": "null"}}},
    ]
    for name in ("VectorUpsertStep", "VectorSearchStep"):
        step = components[name]
        step["properties"]["index"]["pattern"] = NO_CONTROL_PATTERN
        step["anyOf"] = [
            {
                "properties": {
                    "database": {"const": "pinecone"},
                    "index": {"maxLength": 45, "pattern": PINECONE_INDEX_PATTERN.pattern},
                }
            },
            {
                "properties": {
                    "database": {"const": "qdrant"},
                    "index": {"maxLength": 255, "pattern": QDRANT_COLLECTION_PATTERN},
                }
            },
            {"properties": {"database": {"enum": ["weaviate", "pgvector"]}}},
        ]
    for field in ("vectors", "documents"):
        components["VectorUpsertStep"]["properties"][field]["pattern"] = WHOLE_VARIABLE_PATTERN
    components["VectorSearchStep"]["properties"]["filter"] = {
        "anyOf": [
            {
                "type": "object",
                "maxProperties": 32,
                "propertyNames": {"pattern": NO_CONTROL_PATTERN},
                "additionalProperties": {
                    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
                },
            },
            {"type": "null"},
        ],
        "default": None,
        "description": "Metadata equality; string values are templates",
    }
    return components
