"""The Python SDK of LLM Orchestrator: ``Client`` and ``AsyncClient``.

    from llm_orchestrator.client import Client

    with Client(username="admin", password="...") as client:
        workflow = client.workflows.create(name="hello", version="1.0", steps=[...])
        run = client.workflows.execute(workflow.id, {"input": "hi"}, wait=True)
        print(run.status, run.outputs)

It talks HTTP only and imports no server code (no FastAPI, psycopg or engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_orchestrator.client._async import AsyncClient
    from llm_orchestrator.client._sync import Client
    from llm_orchestrator.client.errors import (
        APIConnectionError,
        Conflict,
        FieldError,
        Forbidden,
        LLMOrchestratorError,
        NotFound,
        RateLimited,
        ServerError,
        Unauthorized,
        ValidationError,
        WaitTimeout,
    )
    from llm_orchestrator.client.models import (
        ApiKey,
        AuditEvent,
        AuditVerification,
        Checkpoint,
        CreatedApiKey,
        Execution,
        ExecutionAccepted,
        Health,
        SecretStored,
        StepState,
        SystemConfig,
        SystemStats,
        Tokens,
        User,
        Workflow,
        WorkflowSummary,
    )

# Loaded on first use, so that ``llmo serve`` (which registers the client commands'
# arguments from ``llm_orchestrator.client.cli``) does not pay for httpx and the models.
_HOMES = {
    "AsyncClient": "llm_orchestrator.client._async",
    "Client": "llm_orchestrator.client._sync",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _HOMES:
        home = _HOMES[name]
    elif name in _ERRORS:
        home = "llm_orchestrator.client.errors"
    else:
        home = "llm_orchestrator.client.models"
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


_ERRORS = frozenset(
    {
        "APIConnectionError",
        "Conflict",
        "FieldError",
        "Forbidden",
        "LLMOrchestratorError",
        "NotFound",
        "RateLimited",
        "ServerError",
        "Unauthorized",
        "ValidationError",
        "WaitTimeout",
    }
)

__all__ = [
    "APIConnectionError",
    "ApiKey",
    "AsyncClient",
    "AuditEvent",
    "AuditVerification",
    "Checkpoint",
    "Client",
    "Conflict",
    "CreatedApiKey",
    "Execution",
    "ExecutionAccepted",
    "FieldError",
    "Forbidden",
    "Health",
    "LLMOrchestratorError",
    "NotFound",
    "RateLimited",
    "SecretStored",
    "ServerError",
    "StepState",
    "SystemConfig",
    "SystemStats",
    "Tokens",
    "Unauthorized",
    "User",
    "ValidationError",
    "WaitTimeout",
    "Workflow",
    "WorkflowSummary",
]
