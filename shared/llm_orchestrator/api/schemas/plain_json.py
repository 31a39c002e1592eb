"""JSON bodies of the hottest reads, built without a round trip through their response
models, byte for byte what FastAPI makes of the model (field order, absent ``error``, a
``float`` field's ``1`` written ``1.0``, timestamps, UUIDs, escaping): the models stay
declared on the routes for validation of the slow path and for the OpenAPI document.

pydantic serialises a model's ``dict[str, Any]`` fields by inferring each value's type, and
:func:`pydantic_core.to_json` does the same over a whole dict; what differs is only what
the model's field types do to a value first (an ``int`` given to a ``float`` field), done
here by hand. ``tests/integration/test_read_fast_path.py`` compares the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from llm_orchestrator.executions.status import StepStatus
from llm_orchestrator.usage.ledger import float_or_none as _float
from llm_orchestrator.usage.ledger import int_or_none as _int
from llm_orchestrator.usage.ledger import step_usage, total_cost

if TYPE_CHECKING:
    from llm_orchestrator.executions.service import ExecutionState
    from llm_orchestrator.store.step_runs import StepRunRecord
    from llm_orchestrator.store.workflows import WorkflowHeader


def dumps(document: dict[str, Any]) -> bytes:
    """``document`` as a response model's JSON (a model's default: non-finite floats as
    ``null``)."""
    return to_json(document, inf_nan_mode="null")


def _step(run: StepRunRecord | None) -> dict[str, Any]:
    """``StepStatePublic`` of a step's run (None: not started)."""
    if run is None:
        return {
            "status": StepStatus.PENDING,
            "outputs": {},
            "attempts": None,
            "latency_ms": None,
            "input_tokens": None,
            "output_tokens": None,
            "usage": None,
        }
    status = run.status
    step: dict[str, Any] = {
        "status": status,
        "outputs": (run.outputs or {}) if status == StepStatus.COMPLETED else {},
    }
    if status == StepStatus.FAILED and run.error is not None:
        step["error"] = run.error
    step["attempts"] = _int(run.attempts)
    step["latency_ms"] = _float(run.latency_ms)
    step["input_tokens"] = _int(run.input_tokens)
    step["output_tokens"] = _int(run.output_tokens)
    step["usage"] = step_usage(run.calls) if run.calls else None
    return step


def execution_json(state: ExecutionState) -> bytes:
    """``ExecutionPublic.of(state)`` as FastAPI answers it."""
    record = state.record
    steps = {step_id: _step(state.runs.get(step_id)) for step_id in state.step_ids}
    used = [step["usage"] for step in steps.values() if step["usage"] is not None]
    document: dict[str, Any] = {
        "id": record.id,
        "workflow_id": str(record.workflow_id),
        "status": record.status,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
        "context": {"inputs": record.inputs, "outputs": state.outputs()},
        "steps": steps,
    }
    # Only an ended execution reports an error (see ``ExecutionPublic.of``).
    if record.status.is_terminal and record.error is not None:
        document["error"] = record.error
    document["usage"] = {
        "input_tokens": sum(u["input_tokens"] for u in used),
        "output_tokens": sum(u["output_tokens"] for u in used),
        "cost_usd": total_cost(used),
    }
    return dumps(document)


def workflow_list_json(records: list[WorkflowHeader], total: int, limit: int, offset: int) -> bytes:
    """``WorkflowList`` of a page as FastAPI answers it."""
    return dumps(
        {
            "total": total,
            "limit": limit,
            "offset": offset,
            "workflows": [
                {
                    "id": record.id,
                    "name": record.name,
                    "version": record.version,
                    "description": record.description,
                    "created_at": record.created_at,
                    "updated_at": record.updated_at,
                    "created_by": record.owner_id,
                }
                for record in records
            ],
        }
    )
