"""Runs a loaded state machine; see :mod:`llm_orchestrator.engine.asl` for the semantics."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, NoReturn

from llm_orchestrator.engine.asl.history import (
    ExecutionResult,
    ExecutionStatus,
    HistoryEvent,
    HistoryEventType,
)
from llm_orchestrator.engine.asl.model import (
    STATES_RUNTIME,
    STATES_TIMEOUT,
    Catcher,
    FailState,
    ParallelState,
    PassState,
    PathNotFound,
    RenderContext,
    Retrier,
    Scope,
    StateMachine,
    SucceedState,
    TaskState,
    copy_json,
    error_matches,
)
from llm_orchestrator.engine.asl.timers import TimerHandle, Timers
from llm_orchestrator.engine.asl.tokens import TaskTokenRegistry, TokenOutcome

Invoker = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""``(function_name, payload) -> result``: what a ``lambda:invoke`` Task calls."""

_Event = HistoryEventType


class TaskFailed(Exception):
    """Raised by an invoker: the task failed with ASL error ``error`` (what Retry/Catch match).

    ``retry_after`` (seconds) is a local extension of ASL: the earliest a Retry may try the
    task again, as a provider's ``Retry-After`` asks. A matching retrier waits at least that
    long (never past the execution's deadline), longer when its own backoff says so.
    """

    def __init__(self, error: str, cause: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause
        self.retry_after = retry_after


class StopSignal:
    """StopExecution for local runs: :meth:`stop` ends each run watching it as ABORTED.

    In-flight invocations and task-token waits are cancelled. Stopping a run that has
    already finished changes nothing.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []
        self.requested = False
        self.error: str | None = None
        self.cause: str | None = None

    def stop(self, error: str | None = None, cause: str | None = None) -> None:
        if self.requested:
            return
        self.requested, self.error, self.cause = True, error, cause
        for listener in tuple(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on :meth:`stop`; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


async def run_execution(
    machine: StateMachine,
    execution_input: Mapping[str, Any],
    *,
    execution_arn: str,
    invoker: Invoker,
    token_registry: TaskTokenRegistry,
    timers: Timers,
    rng: random.Random,
    stop: StopSignal | None = None,
    history: bool = True,
) -> ExecutionResult:
    """Run ``machine`` on ``execution_input`` to its end and say how it ended.

    ``execution_arn`` is ``$$.Execution.Id``; ``rng`` draws the FULL-jitter delays.
    ``history``: whether the result carries the event history (False: an empty one, for a
    caller that reads only how the run ended; nine events a one-step run saves building).
    Raises ``TypeError`` if the input is not a JSON object. Cancelling the task running
    this coroutine cancels the execution's work, waits for it to unwind and propagates;
    use ``stop`` to end a run with status ABORTED instead.
    """
    run = _Execution(machine, execution_arn, invoker, token_registry, timers, rng, history)
    return await run.run(execution_input, stop)


class _StateError(Exception):
    """A state failed with an ASL error; Retry/Catch may handle it, else it ends the scope."""

    def __init__(
        self, error: str | None, cause: str | None, retry_after: float | None = None
    ) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause
        self.retry_after = retry_after


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Deadline:
    """``asyncio.timeout_at`` on a :class:`Timers`, so a FakeTimers can expire it."""

    def __init__(self, timers: Timers, when: float) -> None:
        self._timers = timers
        self._when = when
        self.expired = False

    async def __aenter__(self) -> _Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle: TimerHandle = self._timers.call_at(self._when, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        # Only our own cancellation becomes a timeout; one from outside (a stop) goes on.
        if self.expired and self._task.uncancel() <= self._cancelling:
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                raise TimeoutError from exc


class _Execution:
    def __init__(
        self,
        machine: StateMachine,
        execution_arn: str,
        invoker: Invoker,
        tokens: TaskTokenRegistry,
        timers: Timers,
        rng: random.Random,
        history: bool = True,
    ) -> None:
        self._machine = machine
        self._keeps_history = history
        self._arn = execution_arn
        self._invoker = invoker
        self._tokens = tokens
        self._timers = timers
        self._rng = rng
        self._history: list[HistoryEvent] = []
        self._interrupt: ExecutionStatus | None = None
        self._deadline: float | None = None
        """When the execution times out (on the timers' time), if it has a ``TimeoutSeconds``."""
        self._draining: set[asyncio.Task[Any]] = set()
        """Branch tasks stopped because a sibling branch failed (see :meth:`_call`)."""
        self._orphans: dict[str, asyncio.Future[Any]] = {}
        """Calls of stopped branches still running, by function name and payload."""
        self._body: asyncio.Future[Any] | None = None
        """The task running the top scope (states outside any Parallel)."""

    def _record(self, event: HistoryEventType, state: str | None = None, **details: Any) -> None:
        if self._keeps_history:
            self._history.append(HistoryEvent(event, self._timers.now(), state, **details))

    def _result(self, status: ExecutionStatus, **details: Any) -> ExecutionResult:
        return ExecutionResult(status, history=tuple(self._history), **details)

    async def run(
        self, execution_input: Mapping[str, Any], stop: StopSignal | None
    ) -> ExecutionResult:
        if not isinstance(execution_input, Mapping):
            raise TypeError("the execution input must be a JSON object")
        data: dict[str, Any] = copy_json(execution_input)
        self._record(_Event.EXECUTION_STARTED, payload=data)
        if stop is not None and stop.requested:
            return self._aborted(stop)
        body = self._body = asyncio.ensure_future(self._run_scope(self._machine.root, data))

        def interrupt(status: ExecutionStatus) -> None:
            if self._interrupt is None and not body.done():
                self._interrupt = status
                body.cancel()

        timeout = self._machine.timeout_seconds
        timer = None
        if timeout is not None:
            deadline = self._deadline = self._timers.now() + timeout
            timer = self._timers.call_at(deadline, lambda: interrupt(ExecutionStatus.TIMED_OUT))
        unsubscribe = stop.subscribe(lambda: interrupt(ExecutionStatus.ABORTED)) if stop else None
        output: dict[str, Any] | None = None
        failure: _StateError | None = None
        try:
            output = await body
        except _StateError as exc:
            failure = exc
        except asyncio.CancelledError:
            if self._interrupt is None or _being_cancelled():
                # Our caller cancelled us: nothing of this run may outlive the call.
                body.cancel()
                await asyncio.wait([body])
                raise
        finally:
            if timer is not None:
                timer.cancel()
            if unsubscribe is not None:
                unsubscribe()
            await self._end_orphans()
        # Once interrupted, the interrupt decides, whatever the cancelled body did after.
        if self._interrupt is ExecutionStatus.TIMED_OUT:
            cause = f"the execution did not finish within {timeout} seconds"
            self._record(_Event.EXECUTION_TIMED_OUT, error=STATES_TIMEOUT, cause=cause)
            return self._result(ExecutionStatus.TIMED_OUT, error=STATES_TIMEOUT, cause=cause)
        if self._interrupt is ExecutionStatus.ABORTED and stop is not None:
            return self._aborted(stop)
        if failure is not None:
            self._record(_Event.EXECUTION_FAILED, error=failure.error, cause=failure.cause)
            return self._result(ExecutionStatus.FAILED, error=failure.error, cause=failure.cause)
        self._record(_Event.EXECUTION_SUCCEEDED, output=output)
        return self._result(ExecutionStatus.SUCCEEDED, output=output)

    def _aborted(self, stop: StopSignal) -> ExecutionResult:
        self._record(_Event.EXECUTION_ABORTED, error=stop.error, cause=stop.cause)
        return self._result(ExecutionStatus.ABORTED, error=stop.error, cause=stop.cause)

    async def _run_scope(self, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
        name: str | None = scope.start_at
        while name is not None:
            state = scope.states[name]
            if isinstance(state, TaskState):
                name, data = await self._run_task(state, data)
            elif isinstance(state, ParallelState):
                name, data = await self._run_parallel(state, data)
            elif isinstance(state, PassState):
                self._record(_Event.PASS_STATE_ENTERED, state.name)
                self._record(_Event.PASS_STATE_EXITED, state.name)
                name = state.next
            elif isinstance(state, SucceedState):
                self._record(_Event.SUCCEED_STATE_ENTERED, state.name)
                self._record(_Event.SUCCEED_STATE_EXITED, state.name)
                name = None
            else:
                self._fail(state)
        return data

    def _fail(self, state: FailState) -> NoReturn:
        self._record(_Event.FAIL_STATE_ENTERED, state.name, error=state.error, cause=state.cause)
        raise _StateError(state.error, state.cause)

    def _catch(
        self,
        name: str,
        catchers: tuple[Catcher, ...],
        data: dict[str, Any],
        failure: _StateError,
        exited: HistoryEventType,
    ) -> tuple[str, dict[str, Any]]:
        for catcher in catchers:
            if error_matches(catcher.error_equals, failure.error):
                caught = dict(data)
                caught["error"] = {"Error": failure.error, "Cause": failure.cause}
                self._record(exited, name, error=failure.error, cause=failure.cause)
                return catcher.next, caught
        raise failure

    async def _run_task(
        self, state: TaskState, data: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        self._record(_Event.TASK_STATE_ENTERED, state.name)
        # Each retrier counts its own retries; RetryCount counts all of them in this entry.
        retries_done = [0] * len(state.retry)
        retry_count = 0
        try:
            while True:
                try:
                    await self._attempt(state, data, retry_count)
                    break
                except _StateError as failure:
                    index = _matching_retrier(state.retry, failure.error)
                    if index is None or retries_done[index] >= state.retry[index].max_attempts:
                        return self._catch(
                            state.name, state.catch, data, failure, _Event.TASK_STATE_EXITED
                        )
                    delay = state.retry[index].delay(retries_done[index], self._rng)
                    delay = self._not_before(delay, failure.retry_after)
                    retries_done[index] += 1
                    retry_count += 1
                    self._record(
                        _Event.RETRY_SCHEDULED,
                        state.name,
                        error=failure.error,
                        cause=failure.cause,
                        retry_count=retry_count,
                        delay_seconds=delay,
                    )
                await self._timers.sleep(delay)
        except asyncio.CancelledError:
            self._record(_Event.TASK_STATE_ABORTED, state.name)
            raise
        self._record(_Event.TASK_STATE_EXITED, state.name)
        return state.next, data

    def _not_before(self, delay: float, retry_after: float | None) -> float:
        """The backoff ``delay``, stretched to the failure's ``retry_after`` when that is
        later, but never past the execution's deadline (waiting beyond it is timing out)."""
        if retry_after is None or retry_after <= delay:
            return delay
        if self._deadline is not None:
            retry_after = min(retry_after, max(0.0, self._deadline - self._timers.now()))
        return max(delay, retry_after)

    async def _attempt(self, state: TaskState, data: dict[str, Any], retry_count: int) -> None:
        token: str | None = None
        answer: asyncio.Future[TokenOutcome] | None = None
        if state.wait_for_task_token:
            token, answer = self._tokens.issue()
        try:
            try:
                payload = state.payload.render(data, RenderContext(self._arn, retry_count, token))
            except PathNotFound as exc:
                raise _StateError(STATES_RUNTIME, str(exc)) from None
            self._record(
                _Event.TASK_SCHEDULED,
                state.name,
                function_name=state.function_name,
                payload=payload,
                retry_count=retry_count,
            )
            if state.timeout_seconds is None:
                await self._invoke(state, payload, answer)
                return
            deadline = _Deadline(self._timers, self._timers.now() + state.timeout_seconds)
            try:
                async with deadline:
                    await self._invoke(state, payload, answer)
            except TimeoutError:
                if not deadline.expired:
                    raise
                cause = f"the task did not finish within {state.timeout_seconds} seconds"
                self._record(_Event.TASK_TIMED_OUT, state.name, error=STATES_TIMEOUT, cause=cause)
                raise _StateError(STATES_TIMEOUT, cause) from None
        finally:
            if token is not None:
                self._tokens.discard(token)

    async def _invoke(
        self,
        state: TaskState,
        payload: dict[str, Any],
        answer: asyncio.Future[TokenOutcome] | None,
    ) -> None:
        self._record(_Event.TASK_STARTED, state.name)
        failure: _StateError | None = None
        result: Any = None
        try:
            result = await self._call(state.function_name, payload)
        except TaskFailed as exc:
            failure = _StateError(exc.error, exc.cause, exc.retry_after)
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            # Nobody cancelled us: the invoker let a cancellation of its own escape.
            failure = _StateError(type(exc).__name__, str(exc))
        except Exception as exc:
            failure = _StateError(type(exc).__name__, str(exc))
        # A token answered before the invoker failed still counts: the first outcome wins.
        if answer is not None and (failure is None or answer.done()):
            if failure is None:
                self._record(_Event.TASK_SUBMITTED, state.name, output=result)
            outcome = await answer
            failure = None if outcome.succeeded else _StateError(outcome.error, outcome.cause)
            result = outcome.output
        if failure is not None:
            self._record(_Event.TASK_FAILED, state.name, error=failure.error, cause=failure.cause)
            raise failure
        self._record(_Event.TASK_SUCCEEDED, state.name, output=result)

    async def _call(self, function_name: str, payload: dict[str, Any]) -> Any:
        """The invoker's call, in a task of its own.

        When a sibling branch fails, Step Functions stops this branch at once but not a
        Lambda invocation already under way: that runs to its end, its result dropped. So
        does the call here: it is kept (while this run lasts) instead of cancelled, so a
        step already calling its provider finishes and checkpoints (docs/asl.md). The same
        call made again (a resumed Parallel re-entering the step) waits for that one rather
        than invoking the step a second time. Any other cancellation (StopExecution, a
        timeout, the caller) ends the call at once.
        """
        if asyncio.current_task() is self._body:
            # A state of the top scope: no sibling branch can stop it, and no call a
            # stopped branch left running can be this one (step ids are unique, and a
            # branch's states are its own), so none of the above applies: the call is
            # awaited in place, without a task, a shield and its key of its own. A shield
            # would still raise the body's cancellation (a stop, a state's timeout) were the
            # invoker ever to swallow it; so does the check after it here.
            result = await self._invoker(function_name, payload)
            if _being_cancelled():
                raise asyncio.CancelledError
            return result
        key = json.dumps([function_name, payload], sort_keys=True, default=str)
        call = self._orphans.pop(key, None)
        if call is None:
            call = asyncio.ensure_future(self._invoker(function_name, payload))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            if asyncio.current_task() in self._draining and not call.done():
                self._orphans[key] = call
                call.add_done_callback(lambda done: self._forget_orphan(key, done))
            elif not call.done():
                call.cancel()
                await asyncio.wait([call])
            raise

    def _forget_orphan(self, key: str, call: asyncio.Future[Any]) -> None:
        if self._orphans.get(key) is call:
            del self._orphans[key]
        if not call.cancelled():
            call.exception()  # retrieved: the branch that made the call is gone

    async def _end_orphans(self) -> None:
        """The run is over: calls still kept from stopped branches end with it."""
        orphans = list(self._orphans.values())
        self._orphans.clear()
        for call in orphans:
            call.cancel()
        if orphans:
            await asyncio.wait(orphans)

    def _stop_branches(self, branches: list[asyncio.Task[Any]], *, drain: bool) -> None:
        """Cancel ``branches``; with ``drain`` their invocations under way run on."""
        for branch in branches:
            if branch.done():
                continue
            if drain:
                self._draining.add(branch)
            else:
                self._draining.discard(branch)
            branch.cancel()

    async def _run_parallel(
        self, state: ParallelState, data: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        self._record(_Event.PARALLEL_STATE_ENTERED, state.name)
        self._record(_Event.PARALLEL_STATE_STARTED, state.name)
        loop = asyncio.get_running_loop()
        branches = [loop.create_task(self._run_scope(branch, data)) for branch in state.branches]
        first_failure: BaseException | None = None

        def on_branch_done(branch: asyncio.Task[dict[str, Any]]) -> None:
            nonlocal first_failure
            self._draining.discard(branch)
            if first_failure is None and not branch.cancelled() and branch.exception():
                # As on AWS, one failed branch fails the Parallel and stops the others
                # (their invocations under way run on, see _call).
                first_failure = branch.exception()
                self._stop_branches(branches, drain=True)

        for branch in branches:
            branch.add_done_callback(on_branch_done)
        try:
            await asyncio.wait(branches)
        except asyncio.CancelledError:
            # Stopped by a failing sibling of our own branch: stop ours the same way.
            drain = asyncio.current_task() in self._draining
            self._stop_branches(branches, drain=drain)
            await asyncio.wait(branches)
            self._record(_Event.PARALLEL_STATE_ABORTED, state.name)
            raise
        if first_failure is None:
            self._record(_Event.PARALLEL_STATE_SUCCEEDED, state.name)
            self._record(_Event.PARALLEL_STATE_EXITED, state.name)
            return state.next, data
        if not isinstance(first_failure, _StateError):
            raise first_failure
        failure = first_failure
        self._record(
            _Event.PARALLEL_STATE_FAILED, state.name, error=failure.error, cause=failure.cause
        )
        return self._catch(state.name, state.catch, data, failure, _Event.PARALLEL_STATE_EXITED)


def _matching_retrier(retriers: tuple[Retrier, ...], error: str | None) -> int | None:
    # Only the first matching retrier counts, even when its attempts are used up (AWS).
    for index, retrier in enumerate(retriers):
        if error_matches(retrier.error_equals, error):
            return index
    return None
