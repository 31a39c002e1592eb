"""The Step Functions engine (``LLMO_ENGINE=stepfunctions``): runs on AWS Step Functions.

State machines are created lazily, at an execution's start: one per compiled definition,
named ``llmo-<workflow id>-<16 hex of the ASL's SHA-256>``, so the same definition always
maps to the same machine (CreateStateMachine is idempotent for an identical one) and an
edited workflow gets a new machine while running executions keep the one they started on.
A machine is never updated in place; old ones stay until deleted by an operator.

PostgreSQL remains the source of truth, exactly as with the local engine: the execution
row exists before StartExecution (named by the execution id; a restore's run by
``<id>-run-<n>``); pause, resume and cancel are the same conditional updates, with parked
task tokens answered through SendTaskSuccess / SendTaskFailure and StopExecution after a
cancel. How a run ended comes back through :mod:`~.stepfunctions_sync` (the ``events``
Lambda, and DescribeExecution while someone waits); every status change goes through the
execution lifecycle.

boto3 is imported on first use; its calls block, so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from llm_orchestrator.compiler import to_json
from llm_orchestrator.engine.stepfunctions_sync import (
    StatusChange,
    StatusSync,
    run_name,
)
from llm_orchestrator.executions.errors import CANCELLED_BY_USER, WorkflowCancelled, error_record
from llm_orchestrator.executions.lifecycle import Actor, ExecutionLifecycle
from llm_orchestrator.executions.status import ACTIVE, TERMINAL, UNFINISHED, ExecutionStatus
from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.executions import ExecutionRecord, ExecutionRepository

log = logging.getLogger(__name__)

START_FAILED = "StartExecutionFailed"
MACHINE_CACHE_SIZE = 512
WAIT_GRACE_SECONDS = 300
"""How long past an execution's own timeout ``wait`` keeps waiting for Step Functions."""
_GONE_TOKEN_ERRORS = ("TaskDoesNotExist", "TaskTimedOut", "InvalidToken")
_GONE_EXECUTION_ERRORS = ("ExecutionDoesNotExist", "ValidationException")


def state_machine_name(workflow_id: object, state_machine: dict[str, Any]) -> str:
    digest = hashlib.sha256(to_json(state_machine).encode()).hexdigest()[:16]
    return f"llmo-{workflow_id}-{digest}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    """``arn:…:stateMachine:<machine>`` → ``arn:…:execution:<machine>:<name>``."""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


class StepFunctionsEngine:
    def __init__(
        self,
        repo: ExecutionRepository,
        lifecycle: ExecutionLifecycle,
        *,
        role_arn: str,
        client: Any = None,
        poll_seconds: float = 0.25,
        describe_seconds: float = 2.0,
    ) -> None:
        """``repo`` is read; every change of status goes through ``lifecycle``."""
        self._repo = repo
        self._lifecycle = lifecycle
        self._role_arn = role_arn
        self._client = client
        self._poll = poll_seconds
        self._describe_every = describe_seconds
        self._machines: OrderedDict[str, str] = OrderedDict()
        self.sync = StatusSync(repo, lifecycle)

    # -- the Engine interface ------------------------------------------------------------

    async def start(self, execution: ExecutionRecord) -> None:
        await self._start_run(execution)

    async def pause(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        # The flag is all: the step runner Lambda parks the next step (docs/asl.md).
        return await self._lifecycle.pause(execution_id, actor)

    async def resume(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        record, tokens = await self._lifecycle.resume(execution_id, actor)
        if record is None:
            return None
        for token in tokens:
            await asyncio.to_thread(self._answer, token, True)
        return record

    async def cancel(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        record, tokens = await self._lifecycle.cancel(execution_id, actor)
        if record is None:
            return None
        # Cancelled in PostgreSQL already (the answer is final); Step Functions follows.
        for token in tokens:
            await asyncio.to_thread(self._answer, token, False)
        await self._stop_run(record, CANCELLED_BY_USER)
        return record

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord, actor: Actor
    ) -> ExecutionRecord | None:
        current = await self._repo.get(execution_id)
        if current is None or current.status in UNFINISHED:
            return None
        record = await self._lifecycle.restore(execution_id, checkpoint, actor)
        if record is None:
            return None
        # The old run may still wait in a park state; it is stale now (its reports are
        # ignored), so stop it, then start the new run under its own name.
        await self._stop_run(current, "replaced by a restore")
        await self._start_run(record)
        return record

    async def wait(self, execution_id: str) -> None:
        """Until the execution has ended in PostgreSQL, asking Step Functions meanwhile, so
        a run whose status event is late (or never comes, as against moto) still ends."""
        record = await self._repo.get(execution_id)
        if record is None:
            return
        deadline = time.monotonic() + record.timeout_seconds + WAIT_GRACE_SECONDS
        next_describe = time.monotonic() + self._describe_every
        while record is not None and record.status not in TERMINAL:
            if time.monotonic() >= deadline:
                return
            # A recorded failure: the run is at its Fail state, so its end is due now.
            if record.error is not None or time.monotonic() >= next_describe:
                await self.reconcile_one(record)
                next_describe = time.monotonic() + self._describe_every
            await asyncio.sleep(self._poll)
            record = await self._repo.get(execution_id)

    async def recover(self) -> list[str]:
        """Runs live in Step Functions, not in this process: nothing to restart. Endings
        this process missed are applied now."""
        return await self.reconcile()

    async def close(self) -> None:
        return None

    # -- status sync ---------------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Apply what Step Functions says about every active execution; returns the ids
        that changed status."""
        changed: list[str] = []
        for execution_id in await self._repo.ids_with_status(ACTIVE):
            record = await self._repo.get(execution_id)
            if record is not None and await self.reconcile_one(record) in TERMINAL:
                changed.append(execution_id)
        return changed

    async def reconcile_one(self, record: ExecutionRecord) -> str:
        try:
            described = await asyncio.to_thread(self._describe, record)
        except Exception as exc:
            log.warning("could not describe execution %s: %s", record.id, _reason(exc))
            return "unknown"
        if described is None:
            return "not started"
        change = StatusChange.from_description(described)
        return await self.sync.apply(change) if change is not None else "unreadable"

    # -- runs ----------------------------------------------------------------------------

    async def _start_run(self, record: ExecutionRecord) -> None:
        try:
            await asyncio.to_thread(self._start_sync, record)
        except Exception as exc:
            # Never left pending for ever: the run could not start, so it has failed.
            message = f"Step Functions did not start the execution: {_reason(exc)}"
            log.warning("execution %s: %s", record.id, message)
            await self._lifecycle.finish(
                record.id,
                ExecutionStatus.FAILED,
                error=error_record(START_FAILED, message, None),
            )
            return
        await self._lifecycle.running(record.id)

    def _start_sync(self, record: ExecutionRecord) -> None:
        from botocore.exceptions import ClientError

        machine = self._machine(record)
        try:
            self._sfn().start_execution(
                stateMachineArn=machine,
                name=run_name(record.id, record.run_number),
                input=json.dumps({"execution_id": record.id}),
            )
        except ClientError as exc:
            # Same name and input: this run was started already (a retried start).
            if _code(exc) != "ExecutionAlreadyExists":
                raise

    async def _stop_run(self, record: ExecutionRecord, cause: str) -> None:
        try:
            await asyncio.to_thread(self._stop_sync, record, cause)
        except Exception as exc:
            # PostgreSQL has the final word; a run that goes on finds its execution ended
            # and runs no further step (the step runner checks).
            log.warning("could not stop execution %s: %s", record.id, _reason(exc))

    def _stop_sync(self, record: ExecutionRecord, cause: str) -> None:
        from botocore.exceptions import ClientError

        arn = execution_arn(self._machine(record), run_name(record.id, record.run_number))
        try:
            self._sfn().stop_execution(
                executionArn=arn, error=WorkflowCancelled.__name__, cause=cause
            )
        except ClientError as exc:
            if _code(exc) not in _GONE_EXECUTION_ERRORS:
                raise

    def _describe(self, record: ExecutionRecord) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        arn = execution_arn(self._machine(record), run_name(record.id, record.run_number))
        try:
            described: dict[str, Any] = self._sfn().describe_execution(executionArn=arn)
        except ClientError as exc:
            if _code(exc) == "ExecutionDoesNotExist":
                return None
            raise
        return described

    def _machine(self, record: ExecutionRecord) -> str:
        """The ARN of the execution's state machine, created on first use."""
        name = state_machine_name(record.workflow_id, record.state_machine)
        arn = self._machines.get(name)
        if arn is not None:
            self._machines.move_to_end(name)
            return arn
        created = self._sfn().create_state_machine(
            name=name,
            definition=to_json(record.state_machine),
            roleArn=self._role_arn,
            type="STANDARD",
        )
        arn = str(created["stateMachineArn"])
        self._machines[name] = arn
        if len(self._machines) > MACHINE_CACHE_SIZE:
            self._machines.popitem(last=False)
        return arn

    def _answer(self, token: str, success: bool) -> None:
        from botocore.exceptions import ClientError

        try:
            if success:
                self._sfn().send_task_success(taskToken=token, output=json.dumps({"resumed": True}))
            else:
                self._sfn().send_task_failure(
                    taskToken=token, error=WorkflowCancelled.__name__, cause=CANCELLED_BY_USER
                )
        except ClientError as exc:
            # A token of a run that has ended or been stopped: nothing waits on it.
            if _code(exc) not in _GONE_TOKEN_ERRORS:
                raise

    def _sfn(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("stepfunctions")
        return self._client


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _reason(exc: Exception) -> str:
    """Readable and short: the AWS error code and message, or the exception's class."""
    code = _code(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"
