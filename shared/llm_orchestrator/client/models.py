"""What the API returns, as pydantic models. Fields a newer server adds are kept
(``extra="allow"``), never rejected, so an old client keeps working."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_orchestrator.executions.status import TERMINAL

TERMINAL_STATUSES: frozenset[str] = frozenset(TERMINAL)


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Tokens(ApiModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user_id: str
    roles: list[str] = Field(default_factory=list)


class WorkflowSummary(ApiModel):
    id: str
    name: str
    version: str
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created_by: str | None = None


class Workflow(WorkflowSummary):
    steps: list[dict[str, Any]] = Field(default_factory=list)
    timeout_seconds: int | None = None
    inputs: list[str] = Field(default_factory=list)
    """Names of the inputs the workflow's templates use."""


class ExecutionAccepted(ApiModel):
    """The answer to ``execute`` without waiting."""

    execution_id: str
    workflow_id: str
    status: str
    started_at: datetime | None = None


class StepState(ApiModel):
    status: str
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int | None = None


class ExecutionContext(ApiModel):
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)


class Execution(ApiModel):
    id: str
    workflow_id: str
    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    context: ExecutionContext = Field(default_factory=ExecutionContext)
    steps: dict[str, StepState] = Field(default_factory=dict)
    error: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def outputs(self) -> dict[str, Any]:
        return self.context.outputs


class Checkpoint(ApiModel):
    id: str
    workflow_state_id: str
    step_id: str | None = None
    timestamp: datetime | None = None
    snapshot: dict[str, Any] = Field(default_factory=dict)


class ApiKey(ApiModel):
    id: str
    key_hash: str | None = None
    user_id: str
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    name: str
    last_used_at: datetime | None = None


class CreatedApiKey(ApiModel):
    id: str
    key: str
    """The raw key: the server shows it in this answer only."""
    user_id: str
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    name: str


class AuditEvent(ApiModel):
    id: str
    timestamp: datetime
    event_type: str
    user_id: str | None = None
    action: str
    resource_type: str | None = None
    resource_id: str | None = None
    result: str
    ip_address: str | None = None
    event_hash: str
    details: dict[str, Any] = Field(default_factory=dict)


class AuditVerification(ApiModel):
    valid: bool
    checked: int
    first_invalid_event_id: str | None = None


class User(ApiModel):
    id: str
    username: str
    email: str
    roles: list[str] = Field(default_factory=list)
    tier: str | None = None
    created_at: datetime | None = None
    last_login: datetime | None = None


class SystemStats(ApiModel):
    total_workflows: int
    total_executions: int
    executions_by_status: dict[str, int] = Field(default_factory=dict)
    active_users: int
    api_keys_count: int
    avg_execution_time_ms: float
    uptime_seconds: int


class SystemConfig(ApiModel):
    version: str
    environment: str
    features: dict[str, Any] = Field(default_factory=dict)


class SecretStored(ApiModel):
    success: bool
    key: str


class Health(ApiModel):
    status: str
    timestamp: datetime | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
