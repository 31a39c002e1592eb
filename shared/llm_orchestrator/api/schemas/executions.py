"""Request and response bodies of the Execution and State Management endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from llm_orchestrator.api.schemas.common import StrictModel
from llm_orchestrator.executions.status import StepStatus
from llm_orchestrator.usage.ledger import step_usage, total_cost
from llm_orchestrator.workflows.models import MAX_WORKFLOW_TIMEOUT_SECONDS, StepId

if TYPE_CHECKING:
    from llm_orchestrator.executions.service import ExecutionState
    from llm_orchestrator.store.checkpoints import CheckpointRecord
    from llm_orchestrator.store.executions import ExecutionSummary


class ExecuteRequest(StrictModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    inputs: dict[str, Any] = Field(default_factory=dict)
    run_async: bool = Field(
        True,
        alias="async",
        description="true: answer 202 at once; false: wait for the end and return it",
    )
    timeout_override: int | None = Field(
        None,
        ge=1,
        le=MAX_WORKFLOW_TIMEOUT_SECONDS,
        description="Seconds; replaces the workflow's timeout_seconds",
    )


class ExecutionAccepted(BaseModel):
    execution_id: str
    workflow_id: str
    status: str
    started_at: datetime | None

    @classmethod
    def of(cls, record: ExecutionSummary) -> ExecutionAccepted:
        return cls(
            execution_id=record.id,
            workflow_id=str(record.workflow_id),
            status=record.status,
            started_at=record.started_at,
        )


class ExecutionContext(BaseModel):
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class CallAttemptPublic(BaseModel):
    provider: str
    model: str
    outcome: str = Field(description="succeeded, or the error's name (ProviderUnavailable, …)")
    latency_ms: float
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None = Field(description="null when the model's price is unknown")


class UsagePublic(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(
        description="USD from the price table (GET /admin/pricing); null when a call that "
        "used tokens has no known price"
    )


class StepUsagePublic(UsagePublic):
    attempts: list[CallAttemptPublic] = Field(
        description="Every provider call of the step, in order: retries and fallbacks too"
    )


class StepStatePublic(BaseModel):
    status: str = Field(description="pending, running, completed or failed")
    outputs: dict[str, Any]
    error: dict[str, Any] | None = Field(None, description="Present when the step failed")
    attempts: int | None = Field(None, description="Deliveries of the step so far")
    latency_ms: float | None = Field(None, description="Duration of the provider call")
    input_tokens: int | None = Field(None, description="Prompt tokens the provider reported")
    output_tokens: int | None = Field(None, description="Completion tokens the provider reported")
    usage: StepUsagePublic | None = Field(
        None, description="Tokens and cost of every provider call; null for steps that make none"
    )

    @model_serializer(mode="wrap")
    def _drop_absent_error(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("error") is None:
            data.pop("error", None)
        return data


class ExecutionPublic(BaseModel):
    """The execution response: ``GET /workflows/{id}/status`` and every control endpoint."""

    id: str
    workflow_id: str
    status: str = Field(
        description="pending, running, paused, completed, failed, cancelled or timed_out"
    )
    started_at: datetime | None
    completed_at: datetime | None
    context: ExecutionContext
    steps: dict[str, StepStatePublic]
    error: dict[str, Any] | None = Field(
        None, description="type, message and step_id; present when the execution did not succeed"
    )
    usage: UsagePublic = Field(description="The steps' provider calls, summed")

    @model_serializer(mode="wrap")
    def _drop_absent_error(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("error") is None:
            data.pop("error", None)
        return data

    @classmethod
    def of(cls, state: ExecutionState) -> ExecutionPublic:
        record = state.record
        steps: dict[str, StepStatePublic] = {}
        for step_id in state.step_ids:
            run = state.runs.get(step_id)
            if run is None:
                steps[step_id] = StepStatePublic(status=StepStatus.PENDING, outputs={})
            else:
                steps[step_id] = StepStatePublic(
                    status=run.status,
                    outputs=(run.outputs or {}) if run.status == StepStatus.COMPLETED else {},
                    error=run.error if run.status == StepStatus.FAILED else None,
                    attempts=run.attempts,
                    latency_ms=run.latency_ms,
                    input_tokens=run.input_tokens,
                    output_tokens=run.output_tokens,
                    usage=StepUsagePublic.model_validate(step_usage(run.calls))
                    if run.calls
                    else None,
                )
        used = [step.usage for step in steps.values() if step.usage is not None]
        return cls(
            id=record.id,
            workflow_id=str(record.workflow_id),
            status=record.status,
            started_at=record.started_at,
            completed_at=record.completed_at,
            context=ExecutionContext(inputs=record.inputs, outputs=state.outputs()),
            steps=steps,
            # Only an ended execution reports an error: a running one may carry the failure
            # its run is about to end with.
            error=record.error if record.status.is_terminal else None,
            usage=UsagePublic(
                input_tokens=sum(u.input_tokens for u in used),
                output_tokens=sum(u.output_tokens for u in used),
                # The three fields total_cost reads, not a dump of every call's attempts.
                cost_usd=total_cost(
                    [
                        {
                            "cost_usd": u.cost_usd,
                            "input_tokens": u.input_tokens,
                            "output_tokens": u.output_tokens,
                        }
                        for u in used
                    ]
                ),
            ),
        )


class ExecutionFinished(ExecutionPublic):
    """``async: false``: the final execution, plus ``execution_id`` as the 202 answer has."""

    execution_id: str

    @classmethod
    def finished(cls, state: ExecutionState) -> ExecutionFinished:
        public = ExecutionPublic.of(state)
        return cls(execution_id=public.id, **public.__dict__)


class CheckpointPublic(BaseModel):
    id: str
    workflow_state_id: str = Field(description="The execution the checkpoint belongs to")
    step_id: str | None
    timestamp: datetime | None
    snapshot: dict[str, Any]

    @classmethod
    def of(cls, record: CheckpointRecord) -> CheckpointPublic:
        return cls(
            id=record.id,
            workflow_state_id=record.execution_id,
            step_id=record.step_id,
            timestamp=record.created_at,
            snapshot=record.snapshot,
        )


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointPublic]
    total: int
    limit: int
    offset: int


class CreateCheckpointRequest(StrictModel):
    execution_id: str = Field(alias="executionId", min_length=1, max_length=200)
    step_id: StepId | None = Field(None, alias="stepId")


class RestoreRequest(StrictModel):
    checkpoint_id: str = Field(alias="checkpointId", min_length=1, max_length=200)
