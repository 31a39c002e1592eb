"""Workflow definitions: models, validation, graph queries and ``{{var}}`` templating."""

from llm_orchestrator.workflows.models import (
    DEFAULT_WORKFLOW_TIMEOUT_SECONDS,
    MAX_STEPS,
    EmbedStep,
    LlmStep,
    RetryPolicy,
    Step,
    VectorSearchStep,
    VectorUpsertStep,
    WorkflowDefinition,
    ancestors,
    topological_levels,
)
from llm_orchestrator.workflows.templating import (
    TemplateError,
    find_variables,
    render,
    render_data,
    render_value,
)
from llm_orchestrator.workflows.validation import parse_definition

__all__ = [
    "DEFAULT_WORKFLOW_TIMEOUT_SECONDS",
    "MAX_STEPS",
    "EmbedStep",
    "LlmStep",
    "RetryPolicy",
    "Step",
    "TemplateError",
    "VectorSearchStep",
    "VectorUpsertStep",
    "WorkflowDefinition",
    "ancestors",
    "find_variables",
    "parse_definition",
    "render",
    "render_data",
    "render_value",
    "topological_levels",
]
