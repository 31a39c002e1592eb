"""POST /workflows/{workflowId}/execute, GET .../status, POST .../pause|resume|cancel.

The execution lifecycle records the audit events of every transition these ask for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import WithJsonSchema

from llm_orchestrator.api import audit_log, idempotency, long_poll
from llm_orchestrator.api.deps import RuntimeDep, carried, get_runtime, require
from llm_orchestrator.api.fast_path import (
    FastPathRoute,
    JsonBody,
    fast_path,
    once_per_request,
    plain_int,
    plain_query,
)
from llm_orchestrator.api.hot_writes import front_post
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.executions import (
    ExecuteRequest,
    ExecutionAccepted,
    ExecutionFinished,
    ExecutionPublic,
)
from llm_orchestrator.api.schemas.plain_json import execution_json
from llm_orchestrator.api.storable import reject_unstorable_input
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.clock import utcnow
from llm_orchestrator.store.execution_watch import ExecutionWatchRepository

if TYPE_CHECKING:
    from llm_orchestrator.executions.lifecycle import Actor
    from llm_orchestrator.executions.service import ExecutionState
    from llm_orchestrator.runtime import Runtime
    from llm_orchestrator.store.db import Read
    from llm_orchestrator.store.executions import ExecutionRecord, ExecutionSummary
    from llm_orchestrator.store.usage import BudgetRow
    from llm_orchestrator.workflows.service import Workflow

router = APIRouter(
    prefix="/workflows",
    tags=["executions"],
    responses=ERROR_RESPONSES,
    route_class=FastPathRoute,
)

Executor = Annotated[Principal, Depends(require(Permission.WORKFLOW_EXECUTE))]


def _start_read(
    request: Request, runtime: Runtime, owner_filter: str | None, user_id: str | None
) -> Read[tuple[Workflow | None, BudgetRow | None]] | None:
    """What a submit reads first (its workflow and the caller's budget), from the raw
    request: the budget of the user the owner filter names, or for an admin (no filter)
    the user their verified bearer token names (an admin's API key carries no read until
    the lookup has named its user). The route uses the answer only if the caller's read
    turns out to be the same."""
    user_id = owner_filter if owner_filter is not None else user_id
    if user_id is None:
        return None
    return runtime.executions.start_read(
        owner_filter, request.path_params["workflow_id"], runtime.budgets, user_id=user_id
    )


# Authenticating goes with the workflow's and the budget's read: one round trip less.
_submitter = require(Permission.WORKFLOW_EXECUTE, ride=_start_read)
Submitter = Annotated[Principal, Depends(_submitter)]
Reader = Annotated[Principal, Depends(require(Permission.EXECUTION_READ))]


@once_per_request
def _plain_status_query(request: Request) -> tuple[str, int] | None:
    """``executionId`` and ``wait`` of a status read if plainly well-formed (what FastAPI
    would accept, with the values it would give); None for anything else."""
    query = plain_query(request, ("executionId", "wait"))
    if query is None:
        return None
    execution_id = query.get("executionId")
    wait = plain_int(query.get("wait"), 0, 0, long_poll.MAX_WAIT_SECONDS)
    if execution_id is None or not 1 <= len(execution_id) <= 200 or wait is None:
        return None
    return execution_id, wait


def _status_read(
    request: Request, runtime: Runtime, owner_filter: str | None, _user_id: str | None
) -> Read[ExecutionState | None] | None:
    """The state ``execution_status`` is about to read, from the raw request (validated
    only after the caller is authenticated)."""
    query = _plain_status_query(request)
    if query is None:
        return None
    return runtime.executions.state_read(owner_filter, request.path_params["workflow_id"], query[0])


# Authenticating goes with the state read: one round trip for the whole request.
_status_reader = require(Permission.EXECUTION_READ, ride=_status_read)
StatusReader = Annotated[Principal, Depends(_status_reader)]
Canceller = Annotated[Principal, Depends(require(Permission.EXECUTION_CANCEL))]
ExecutionId = Annotated[str, Query(alias="executionId", min_length=1, max_length=200)]
WaitSeconds = Annotated[
    int,
    Query(
        ge=0,
        le=long_poll.MAX_WAIT_SECONDS,
        description=(
            "Long-poll: hold the answer until the execution's status or any step's status"
            " changes, or this many seconds pass (0..25; 0 answers at once). An execution"
            " that has ended is answered at once."
        ),
    ),
]


IdempotencyKey = Annotated[
    str | None,
    Header(alias=idempotency.HEADER, description=idempotency.HEADER_DESCRIPTION),
    WithJsonSchema(idempotency.KEY_SCHEMA),
]


_IDEMPOTENCY_HEADER = idempotency.HEADER.lower().encode("latin-1")


def _plain_submit(request: Request, body: ExecuteRequest) -> ExecuteRequest | None:
    """A submit the app's front may answer (``api/hot_writes.py``): asynchronous (202 at
    once) and without an idempotency key; None for any other."""
    if not body.run_async:
        return None
    for name, _ in request.scope["headers"]:
        if name == _IDEMPOTENCY_HEADER:
            return None
    return body


async def _submit_plainly(request: Request, body: ExecuteRequest) -> ExecutionAccepted:
    """``execute``'s front path: what its dependencies and body do, in order, for a plain
    submit (the app-wide input check, the caller's authentication, counting and
    permission, then the start)."""
    await reject_unstorable_input(request)
    runtime = await get_runtime(request)
    caller = await _submitter(request)
    record = await _start(request.path_params["workflow_id"], body, request, runtime, caller)
    return ExecutionAccepted.of(record)


@router.post(
    "/{workflow_id}/execute",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExecutionAccepted | ExecutionFinished,
    responses={200: {"model": ExecutionFinished, "description": "async: false, finished"}},
)
@front_post(_plain_submit, _submit_plainly)
async def execute(
    workflow_id: str,
    body: ExecuteRequest,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    caller: Submitter,
    idempotency_key: IdempotencyKey = None,
) -> ExecutionAccepted | ExecutionFinished | JSONResponse:
    key = idempotency.parse_key(idempotency_key)
    record: ExecutionSummary
    if key is None:
        record = await _start(workflow_id, body, request, runtime, caller)
        response.status_code, answer = await _answer(record, body, runtime)
        return answer
    keys = idempotency.repository(runtime)
    digest = idempotency.fingerprint(workflow_id, body.model_dump(mode="json", by_alias=True))
    earlier = await keys.claim(caller.user_id, key, digest, now=utcnow(), ttl=idempotency.TTL)
    if earlier is not None:
        idempotency.check_same_request(earlier, digest, key)
        if earlier.status_code is not None:
            return idempotency.replay(earlier)
        # The first request started an execution but has not answered yet (it waits for the
        # end, or died before answering): answer from that same execution.
        execution_id = idempotency.execution_in_progress(earlier, key)
        record = (await runtime.executions.state(caller, workflow_id, execution_id)).record
    else:
        try:
            record = await _start(workflow_id, body, request, runtime, caller)
        except BaseException:
            await keys.release(caller.user_id, key)
            raise
        await keys.attach_execution(caller.user_id, key, record.id)
    response.status_code, answer = await _answer(record, body, runtime)
    await keys.complete(caller.user_id, key, response.status_code, answer.model_dump(mode="json"))
    return answer


async def _start(
    workflow_id: str, body: ExecuteRequest, request: Request, runtime: Runtime, caller: Principal
) -> ExecutionRecord:
    read = runtime.executions.start_read(
        caller.owner_filter(), workflow_id, runtime.budgets, user_id=caller.user_id
    )
    found = None if read is None else carried(request, read)
    return await runtime.executions.execute(
        caller,
        workflow_id,
        body.inputs,
        timeout_override=body.timeout_override,
        actor=audit_log.actor(request, runtime),
        audit_details={"async": body.run_async},
        # Checked first, read with the workflow (one round trip less per submit).
        budgets=runtime.budgets,
        found=None if found is None else found[0],
    )


async def _answer(
    record: ExecutionSummary, body: ExecuteRequest, runtime: Runtime
) -> tuple[int, ExecutionAccepted | ExecutionFinished]:
    if body.run_async:
        return status.HTTP_202_ACCEPTED, ExecutionAccepted.of(record)
    return status.HTTP_200_OK, ExecutionFinished.finished(await runtime.executions.wait(record))


async def _status_plainly(request: Request, query: tuple[str, int]) -> JsonBody:
    """``execution_status``'s fast path: what its dependencies and body do, in order."""
    await reject_unstorable_input(request)
    runtime = await get_runtime(request)
    caller = await _status_reader(request)
    execution_id, wait = query
    state = await _status(
        request, runtime, caller, request.path_params["workflow_id"], execution_id, wait
    )
    return JsonBody(execution_json(state))


@router.get("/{workflow_id}/status", response_model=ExecutionPublic)
@fast_path(_plain_status_query, _status_plainly)
async def execution_status(
    workflow_id: str,
    execution_id: ExecutionId,
    request: Request,
    runtime: RuntimeDep,
    caller: StatusReader,
    wait: WaitSeconds = 0,
) -> ExecutionPublic:
    return ExecutionPublic.of(
        await _status(request, runtime, caller, workflow_id, execution_id, wait)
    )


async def _status(
    request: Request,
    runtime: Runtime,
    caller: Principal,
    workflow_id: str,
    execution_id: str,
    wait: int,
) -> ExecutionState:
    read = runtime.executions.state_read(caller.owner_filter(), workflow_id, execution_id)
    answer = None if read is None else carried(request, read)
    if answer is not None and answer[0] is not None:
        state = answer[0]
    else:
        state = await runtime.executions.state(caller, workflow_id, execution_id)
    if wait and not long_poll.has_ended(state):
        await long_poll.changed_within(ExecutionWatchRepository(runtime.db), state, wait, request)
        # Changed or not, the answer is the state as it is now.
        state = await runtime.executions.state_of(state.record)
    return state


Transition = Callable[[Principal, str, str, "Actor"], Awaitable["ExecutionState"]]
"""``ExecutionService.pause`` / ``resume`` / ``cancel``."""


async def _steer(
    transition: Transition,
    caller: Principal,
    workflow_id: str,
    execution_id: str,
    request: Request,
    runtime: Runtime,
) -> ExecutionPublic:
    """The shape pause, resume and cancel share: one transition of the lifecycle (which
    audits it), answered with the execution's state; 409 when the status forbids it."""
    return ExecutionPublic.of(
        await transition(caller, workflow_id, execution_id, audit_log.actor(request, runtime))
    )


@router.post("/{workflow_id}/pause", response_model=ExecutionPublic)
async def pause(
    workflow_id: str,
    execution_id: ExecutionId,
    request: Request,
    runtime: RuntimeDep,
    caller: Canceller,
) -> ExecutionPublic:
    return await _steer(
        runtime.executions.pause, caller, workflow_id, execution_id, request, runtime
    )


@router.post("/{workflow_id}/resume", response_model=ExecutionPublic)
async def resume(
    workflow_id: str,
    execution_id: ExecutionId,
    request: Request,
    runtime: RuntimeDep,
    caller: Executor,
) -> ExecutionPublic:
    return await _steer(
        runtime.executions.resume, caller, workflow_id, execution_id, request, runtime
    )


@router.post("/{workflow_id}/cancel", response_model=ExecutionPublic)
async def cancel(
    workflow_id: str,
    execution_id: ExecutionId,
    request: Request,
    runtime: RuntimeDep,
    caller: Canceller,
) -> ExecutionPublic:
    return await _steer(
        runtime.executions.cancel, caller, workflow_id, execution_id, request, runtime
    )
