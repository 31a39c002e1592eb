"""The local engine: compiled state machines run in-process by the ASL interpreter.

Each run is an asyncio task on the server's event loop; a step waiting on its provider is
an awaiting coroutine, not a blocked thread, so hundreds of executions run at once. The
invoker is the step runner itself, the function the step-runner Lambda wraps on AWS.

Nothing lives only here: statuses, step outputs, checkpoints and parked task tokens are
in PostgreSQL, so a restarted server resumes every pending or running execution from its
last checkpoint (the step runner skips steps that already have outputs). Every status
change goes through the execution lifecycle; this engine adds how runs start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llm_orchestrator.engine.asl import (
    ExecutionResult,
    StateMachine,
    StopSignal,
    SystemTimers,
    TaskFailed,
    TaskTokenNotFound,
    TaskTokenRegistry,
    Timers,
    load_state_machine,
    run_execution,
)
from llm_orchestrator.engine.asl import ExecutionStatus as RunStatus
from llm_orchestrator.engine.ownership import HERE, Ownership
from llm_orchestrator.executions.errors import (
    CANCELLED_BY_USER,
    WorkflowCancelled,
    cancelled_error,
    error_record,
)
from llm_orchestrator.executions.lifecycle import Actor, ExecutionLifecycle
from llm_orchestrator.executions.status import UNFINISHED, ExecutionStatus
from llm_orchestrator.memo import IdentityCache
from llm_orchestrator.providers.errors import ProviderError
from llm_orchestrator.steps.runner import Chain, StepRunner
from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.executions import ExecutionRecord, ExecutionRepository
from llm_orchestrator.store.fence import RUN_FENCE, FencedOff

log = logging.getLogger(__name__)

LOADED_MACHINES_CACHED = 256


@dataclass
class _Run:
    task: asyncio.Task[None] | None
    stop: StopSignal = field(default_factory=StopSignal)
    detached: bool = False
    """Set when the run is stopped on purpose (restore, shutdown): its ending is not recorded."""
    fence: int | None = None
    """The runner id the run started under: its steps begin and commit only while the
    execution is still that runner's (``store.fence.RUN_FENCE``)."""


def _ending(result: ExecutionResult) -> tuple[ExecutionStatus, dict[str, Any] | None]:
    if result.status is RunStatus.SUCCEEDED:
        return ExecutionStatus.COMPLETED, None
    if result.status is RunStatus.ABORTED or result.error == WorkflowCancelled.__name__:
        return ExecutionStatus.CANCELLED, cancelled_error()
    error = error_record(result.error or "States.Failed", result.cause or "", None)
    if result.status is RunStatus.TIMED_OUT:
        return ExecutionStatus.TIMED_OUT, error
    return ExecutionStatus.FAILED, error


class LocalEngine:
    def __init__(
        self,
        repo: ExecutionRepository,
        lifecycle: ExecutionLifecycle,
        step_runner: StepRunner,
        tokens: TaskTokenRegistry,
        *,
        timers: Timers | None = None,
        rng: random.Random | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        """``step_runner`` answers parked tasks through ``tokens``, the registry this engine's
        runs wait on (the composition root builds both). ``repo`` is read; every change of
        status goes through ``lifecycle``. ``ownership``: this process as one runner among
        several on the database (``engine.ownership``), from :meth:`recover` on; without it
        the engine assumes it is the only one."""
        self._repo = repo
        self._ownership = ownership
        self._lifecycle = lifecycle
        self._timers: Timers = timers or SystemTimers()
        self._rng = rng or random.Random()
        self.tokens = tokens
        self.step_runner = step_runner
        self._runs: dict[str, _Run] = {}
        self._machines: IdentityCache[dict[str, Any], StateMachine] = IdentityCache(
            LOADED_MACHINES_CACHED
        )
        """Loaded state machines by the compiled document: executions of one workflow
        started by this process share the document (the executions service caches it),
        and loading a large machine costs more than running a step."""
        self._next_steps: IdentityCache[dict[str, Any], dict[str, str]] = IdentityCache(
            LOADED_MACHINES_CACHED
        )
        """Step id → the step the machine runs right after it, by compiled document."""
        self._last_steps: IdentityCache[dict[str, Any], frozenset[str]] = IdentityCache(
            LOADED_MACHINES_CACHED
        )
        """The steps whose success ends the run, by compiled document."""
        self._controls: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- the Engine interface ------------------------------------------------------------

    async def start(self, execution: ExecutionRecord) -> None:
        if self._ownership is not None and self._ownership.lost:
            # Created without an owner while this process has no lease: a live runner
            # claims it (this one, once its lease is back).
            return
        self.step_runner.remember_definition(execution.id, execution.definition)
        self._launch(execution)

    async def pause(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        # Only a flag: the step runner of whichever process runs it parks the next step.
        return await self._lifecycle.pause(execution_id, actor)

    async def resume(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        return await self._routed("resume", execution_id, actor, self._resume_here)

    async def cancel(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        return await self._routed("cancel", execution_id, actor, self._cancel_here)

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord, actor: Actor
    ) -> ExecutionRecord | None:
        if self._ownership is not None:
            # The old run is stopped where it runs (by its owner, which refuses while the
            # execution is still active); the new run is this process's.
            if await self._ownership.route("detach", execution_id, actor) is False:
                return None
        return await self._restore_here(execution_id, checkpoint, actor)

    async def _routed(
        self,
        action: str,
        execution_id: str,
        actor: Actor,
        here: Callable[[str, Actor], Awaitable[ExecutionRecord | None]],
    ) -> ExecutionRecord | None:
        """``here`` when this process runs the execution, else what its owner answered."""
        if self._ownership is None:
            return await here(execution_id, actor)
        routed = await self._ownership.route(action, execution_id, actor)
        if routed == HERE:
            return await here(execution_id, actor)
        return await self._repo.get(execution_id) if routed else None

    async def carry_out(self, action: str, execution_id: str, actor: Actor) -> bool:
        """A control request another worker forwarded to this one, the execution's owner."""
        if action == "resume":
            return await self._resume_here(execution_id, actor) is not None
        if action == "cancel":
            return await self._cancel_here(execution_id, actor) is not None
        if action == "detach":
            async with self._control(execution_id):
                current = await self._repo.get(execution_id)
                if current is None or current.status in UNFINISHED:
                    return False
                await self._detach(execution_id)
                return True
        raise ValueError(f"unknown control action {action!r}")

    async def _resume_here(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        async with self._control(execution_id):
            record, tokens = await self._lifecycle.resume(execution_id, actor)
            if record is None:
                return None
            for token in tokens:
                self._answer(token, success=True)
            if execution_id not in self._runs:
                # Paused before a restart: the parked run is gone, so start one; completed
                # steps return their stored results and the rest run.
                self._launch(record)
            return record

    async def _cancel_here(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        async with self._control(execution_id):
            record, tokens = await self._lifecycle.cancel(execution_id, actor)
            if record is None:
                return None
            for token in tokens:
                self._answer(token, success=False)
            run = self._runs.get(execution_id)
            if run is not None:
                run.stop.stop(WorkflowCancelled.__name__, CANCELLED_BY_USER)
            return record

    async def _restore_here(
        self, execution_id: str, checkpoint: CheckpointRecord, actor: Actor
    ) -> ExecutionRecord | None:
        async with self._control(execution_id):
            current = await self._repo.get(execution_id)
            if current is None or current.status in UNFINISHED:
                return None
            await self._detach(execution_id)
            record = await self._lifecycle.restore(execution_id, checkpoint, actor)
            if record is not None:
                self._launch(record)
            return record

    def _control(self, execution_id: str) -> asyncio.Lock:
        """One lock per execution for resume, cancel and restore.

        Restore reads the status, stops the current run, then resets the execution; without
        the lock a resume (or another restore) between the read and the stop has its new
        or released run killed by the stop, and the reset then refuses the now running
        execution: it stays active with no run at all. The runs are this process's, so a
        process-local lock is what guards them: with several workers, every control request
        is carried out by the execution's owner (``engine.ownership``).
        """
        lock = self._controls.get(execution_id)
        if lock is None:
            lock = self._controls[execution_id] = asyncio.Lock()
        return lock

    async def wait(self, execution_id: str) -> None:
        # A loop, because a restore may replace the run while we wait.
        while (run := self._runs.get(execution_id)) is not None and run.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(run.task)
            if self._runs.get(execution_id) is run:
                return

    async def recover(self) -> list[str]:
        """Resume the unfinished executions nobody runs. With ``ownership``: become a
        runner, then claim only the executions of dead runners (and keep doing so)."""
        if self._ownership is not None:
            if self._ownership.started:
                return await self._ownership.claim_orphans()
            return await self._ownership.start(self)
        return await self.resume_orphans(await self._repo.ids_with_status(UNFINISHED))

    async def resume_orphans(self, execution_ids: list[str]) -> list[str]:
        recovered: list[str] = []
        me = self._ownership.runner_id if self._ownership is not None else None
        for execution_id in execution_ids:
            run = self._runs.get(execution_id)
            if run is not None:
                if run.fence == me:
                    continue
                # A run from an earlier lease: fenced off already (the execution is this
                # lease's now), so replace it with one that may commit.
                await self._detach(execution_id)
            record = await self._repo.get(execution_id)
            if record is None or record.status not in UNFINISHED:
                continue
            if record.error is not None:
                # Its failure was recorded but the process died before the run's end: the
                # run would only have reached its Fail state, so end it as that would have.
                await self._lifecycle.finish(execution_id, ExecutionStatus.FAILED)
                continue
            self._launch(record)
            recovered.append(execution_id)
        if recovered:
            log.info("resumed %d unfinished execution(s)", len(recovered))
        return recovered

    async def close(self) -> None:
        if self._ownership is not None:
            await self._ownership.quiesce()
        await self.drop_all_runs()
        if self._ownership is not None:
            await self._ownership.release()

    async def drop_all_runs(self) -> None:
        """Stop every run of this process without recording anything (they are resumed by
        whichever process next claims them)."""
        for execution_id in list(self._runs):
            await self._detach(execution_id)

    async def leads(self) -> bool:
        """Whether this process does what only one serving process should (see
        :meth:`Ownership.leads`); without ownership it is the only one."""
        return True if self._ownership is None else await self._ownership.leads()

    @property
    def running_count(self) -> int:
        return len(self._runs)

    # -- runs ----------------------------------------------------------------------------

    def _launch(self, execution: ExecutionRecord) -> None:
        execution_id = execution.id
        fence = None
        if self._ownership is not None:
            if self._ownership.lost:
                # No lease (lost, not back yet): a live runner claims it, this one included
                # once its lease is back.
                return
            # None when this process never became a runner (a runtime used without
            # ``recover``, as before runners existed): its runs are not fenced.
            fence = self._ownership.runner_id
        run = _Run(task=None, fence=fence)
        self._runs[execution_id] = run
        task = asyncio.get_running_loop().create_task(
            self._drive(execution, run), name=f"execution {execution_id}"
        )
        run.task = task

        def forget(_: asyncio.Task[None]) -> None:
            if self._runs.get(execution_id) is run:
                del self._runs[execution_id]

        task.add_done_callback(forget)

    async def _detach(self, execution_id: str) -> None:
        run = self._runs.pop(execution_id, None)
        if run is None or run.task is None:
            return
        run.detached = True
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run.task

    async def _drive(self, execution: ExecutionRecord, run: _Run) -> None:
        execution_id, state_machine = execution.id, execution.state_machine
        # In this task's context only (and the tasks it starts: Parallel branches, timers).
        RUN_FENCE.set(run.fence)
        chain: Chain | None = None
        try:
            machine = self._machines.get(state_machine, load_state_machine)
            # The commit of a step whose success ends the run writes the execution's end
            # too (one round trip and one transaction less per run): see Chain.ending.
            chain = Chain(
                self._next_steps.get(state_machine, next_steps),
                last_steps=self._last_steps.get(state_machine, last_steps),
                end=lambda: self._lifecycle.run_end(execution),
            )

            async def invoke(function_name: str, payload: dict[str, Any]) -> Any:
                try:
                    return await self._invoke(function_name, payload, chain)
                except FencedOff:
                    # Another runner runs it now: stop as a kill -9 would, writing nothing
                    # (the interpreter sees a failed task; the cancel ends the run at its
                    # next wait, and ``detached`` keeps its ending unrecorded).
                    if not run.detached:
                        log.warning(
                            "execution %s is run by another runner now: its run here stops",
                            execution_id,
                        )
                    run.detached = True
                    if run.task is not None:
                        run.task.cancel()
                    raise

            # No ``lifecycle.running`` here: the first step's begin marks the execution
            # running in its own statement (one round trip less per execution).
            result = await run_execution(
                machine,
                {"execution_id": execution_id},
                execution_arn=execution_id,
                invoker=invoke,
                token_registry=self.tokens,
                timers=self._timers,
                rng=self._rng,
                stop=run.stop,
                # Nothing here reads the run's event history (its ending is in ``result``).
                history=False,
            )
        except asyncio.CancelledError:
            if run.detached:
                # Stopped on purpose: nothing recorded, but an end its last step's commit
                # wrote has ended the execution, and is announced as any other.
                await self._announce_written(execution, chain)
                return
            raise
        except Exception:
            # Left as it is in the database, so the next start resumes it.
            log.exception("execution %s stopped unexpectedly", execution_id)
            await self._announce_written(execution, chain)
            return
        if await self._announce_written(execution, chain) or run.detached:
            # Its last step's commit wrote the end (whatever the run said after it: a
            # timeout or a stop that came later found the execution ended).
            return
        status, error = _ending(result)
        try:
            # Nothing is written when a cancel has ended the execution already.
            await self._lifecycle.finish(execution_id, status, error=error, execution=execution)
        except Exception:
            # Unrecorded, the execution stays active and the next start runs it to its end
            # again (every step returns its stored result).
            log.exception("could not record the end of execution %s", execution_id)

    async def _announce_written(self, execution: ExecutionRecord, chain: Chain | None) -> bool:
        """Whether the run's last step wrote the execution's end with its commit; if so,
        the end is announced (its audit event linked, ``on_ended``)."""
        ended = await chain.ended() if chain is not None else None
        if ended is None:
            return False
        try:
            await self._lifecycle.ended(execution, ended)
        except Exception:
            log.exception("could not announce the end of execution %s", execution.id)
        return True

    async def _invoke(
        self, function_name: str, payload: dict[str, Any], chain: Chain | None = None
    ) -> Any:
        try:
            return await self.step_runner.handle(payload, chain=chain)
        except ProviderError as exc:
            # The provider's Retry-After rides along, so the Retry waits at least that long
            # (on the engine's timers) instead of its own, possibly shorter, backoff.
            raise TaskFailed(type(exc).__name__, exc.message, retry_after=exc.retry_after) from exc

    def _answer(self, token: str, *, success: bool) -> None:
        try:
            if success:
                self.tokens.send_task_success(token, {"resumed": True})
            else:
                self.tokens.send_task_failure(token, WorkflowCancelled.__name__, CANCELLED_BY_USER)
        except TaskTokenNotFound:
            # A token of a run that ended or died with an earlier server process.
            log.debug("parked task token no longer waited on")


def next_steps(state_machine: dict[str, Any]) -> dict[str, str]:
    """Step id → the step whose Task the compiled machine enters right after that step's
    Task succeeds (its ``Next``), in every scope; what a run's :class:`Chain` begins early."""
    found: dict[str, str] = {}

    def walk(states: dict[str, Any]) -> None:
        for state in states.values():
            for branch in state.get("Branches", ()):
                walk(branch.get("States", {}))
            step = _run_step(state)
            following = states.get(state.get("Next") or "")
            if step is not None and following is not None:
                next_step = _run_step(following)
                if next_step is not None:
                    found[step] = next_step

    walk(state_machine.get("States", {}))
    return found


def last_steps(state_machine: dict[str, Any]) -> frozenset[str]:
    """The steps whose Task, once it succeeds, leads the compiled machine straight to its
    successful end: in the top scope (not inside a Parallel, which waits for its other
    branches), through Pass states only, to a Succeed state or the end. Nothing can fail
    the run after such a step but its timeout or a stop, both of which find the execution
    ended once that step's commit has ended it."""
    states: dict[str, Any] = state_machine.get("States", {})
    found: set[str] = set()
    for state in states.values():
        step = _run_step(state)
        if step is None:
            continue
        following, seen = state, set()
        while not following.get("End"):
            name = following.get("Next")
            if name is None or name in seen or name not in states:
                break
            seen.add(name)
            following = states[name]
            if following.get("Type") == "Succeed":
                found.add(step)
                break
            if following.get("Type") != "Pass":
                break
        else:
            found.add(step)
    return frozenset(found)


def _run_step(state: dict[str, Any]) -> str | None:
    """The step a ``run`` Task runs (None for any other state)."""
    if state.get("Type") != "Task" or str(state.get("Resource", "")).endswith(".waitForTaskToken"):
        return None
    payload = state.get("Parameters", {}).get("Payload", {})
    step = payload.get("step_id")
    return step if payload.get("action") == "run" and isinstance(step, str) else None
