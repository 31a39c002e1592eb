"""The local ASL interpreter runs the compiled shape of docs/asl.md like Step Functions does.

Definitions are written by hand in that shape (one Task per step plus its ``__paused``,
``__failed``, ``__fail`` and ``__cancelled`` states), and the step runner is played by
:class:`FakeStepRunner` (in ``asl_support.py`` with the other shared helpers). Backoffs and
timeouts run on a FakeTimers, so nothing here sleeps except the concurrency check, which is
about real time.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from llm_orchestrator.engine.asl import (
    LAMBDA_INVOKE,
    ExecutionStatus,
    FakeTimers,
    HistoryEventType,
    StopSignal,
    SystemTimers,
    TaskFailed,
    TaskTokenNotFound,
    TaskTokenRegistry,
    load_state_machine,
    run_execution,
)
from tests.unit.asl_support import (
    EXECUTION_ARN,
    INPUT,
    RUNNER,
    Behaviour,
    FakeStepRunner,
    ProviderRateLimited,
    ProviderUnavailable,
    WorkflowPaused,
    catch,
    execute,
    hang_until_cancelled,
    payload,
    provider_retry,
    workflow,
)


async def test_single_task_succeeds_with_its_payload_paths_resolved() -> None:
    runner = FakeStepRunner()

    result = await execute(workflow("a"), runner)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output == INPUT
    assert runner.calls == [
        {"action": "run", "execution_id": "exec-1", "step_id": "a", "attempt": 0}
    ]


async def test_chain_runs_its_steps_in_order_and_records_the_history() -> None:
    runner = FakeStepRunner()

    result = await execute(workflow("a", "b", "c"), runner)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert runner.trace() == [("run", "a"), ("run", "b"), ("run", "c")]
    entered = result.events(HistoryEventType.TASK_STATE_ENTERED)
    assert [event.state for event in entered] == ["a", "b", "c"]
    assert result.history[0].type is HistoryEventType.EXECUTION_STARTED
    assert result.history[-1].type is HistoryEventType.EXECUTION_SUCCEEDED


@pytest.mark.parametrize("failure", [None, TaskFailed("Boom", "it broke")])
async def test_a_run_without_history_ends_as_one_with_it_and_records_no_events(
    failure: TaskFailed | None,
) -> None:
    def runner() -> FakeStepRunner:
        return FakeStepRunner({"b": [failure]} if failure is not None else None)

    kept = await execute(workflow("a", "b"), runner())
    unkept_runner = runner()

    result = await execute(workflow("a", "b"), unkept_runner, history=False)

    assert kept.history and result.history == ()
    ending = (result.status, result.output, result.error, result.cause)
    assert ending == (kept.status, kept.output, kept.error, kept.cause)
    ended = ExecutionStatus.SUCCEEDED if failure is None else ExecutionStatus.FAILED
    assert result.status is ended
    assert unkept_runner.trace() == [("run", "a"), ("run", "b")] + (
        [] if failure is None else [("fail", "b")]  # the catch's failure handler
    )


async def test_execution_id_context_path_is_the_execution_arn() -> None:
    definition = {
        "StartAt": "t",
        "States": {
            "t": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {
                    "FunctionName": RUNNER,
                    "Payload": {"arn.$": "$$.Execution.Id", "nested": {"id.$": "$.execution_id"}},
                },
                "ResultPath": None,
                "End": True,
            }
        },
    }
    seen: list[dict[str, Any]] = []

    async def invoker(function_name: str, payload: dict[str, Any]) -> None:
        seen.append(payload)

    await execute(definition, invoker)

    assert seen == [{"arn": EXECUTION_ARN, "nested": {"id": "exec-1"}}]


async def test_parallel_branches_run_at_the_same_time() -> None:
    timers = FakeTimers()
    spans: dict[str, list[float]] = {}

    def slow(step_id: str) -> Behaviour:
        async def work(payload: dict[str, Any]) -> None:
            spans[step_id] = [timers.now()]
            await timers.sleep(10)
            spans[step_id].append(timers.now())

        return work

    runner = FakeStepRunner({s: [slow(s)] for s in ("b", "c", "d")})

    result = await execute(workflow("a", ("b", "c", "d"), "e"), runner, timers=timers)

    assert result.status is ExecutionStatus.SUCCEEDED
    # Three 10 s steps in 10 s of virtual time: each started before any finished.
    assert spans == {"b": [0.0, 10.0], "c": [0.0, 10.0], "d": [0.0, 10.0]}
    assert runner.trace()[0] == ("run", "a") and runner.trace()[-1] == ("run", "e")
    assert timers.now() == 10.0


async def test_retry_waits_with_exponential_backoff_capped_by_max_delay() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=2, BackoffRate=2, MaxDelaySeconds=5, MaxAttempts=3)]
    runner = FakeStepRunner({"a": [ProviderRateLimited("429")] * 3})

    result = await execute(workflow("a", retry=retry), runner, timers=timers)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert timers.sleeps == [2.0, 4.0, 5.0]
    scheduled = result.events(HistoryEventType.RETRY_SCHEDULED)
    assert [(e.delay_seconds, e.retry_count, e.error) for e in scheduled] == [
        (2.0, 1, "ProviderRateLimited"),
        (4.0, 2, "ProviderRateLimited"),
        (5.0, 3, "ProviderRateLimited"),
    ]


async def test_retry_count_context_path_counts_retries_of_the_state() -> None:
    runner = FakeStepRunner({"a": [ProviderRateLimited(), ProviderUnavailable()]})

    await execute(workflow("a"), runner)

    assert [call["attempt"] for call in runner.calls] == [0, 1, 2]


async def test_full_jitter_draws_each_delay_from_the_injected_rng_within_the_backoff() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=3, BackoffRate=2, JitterStrategy="FULL")]
    runner = FakeStepRunner({"a": [ProviderUnavailable()] * 3})

    await execute(workflow("a", retry=retry), runner, timers=timers, rng=random.Random(42))

    same_draws = random.Random(42)
    assert timers.sleeps == [same_draws.uniform(0.0, backoff) for backoff in (3.0, 6.0, 12.0)]
    assert all(
        0.0 <= slept <= backoff for slept, backoff in zip(timers.sleeps, (3, 6, 12), strict=True)
    )


async def test_each_retrier_keeps_its_own_attempt_count() -> None:
    retry = [
        {"ErrorEquals": ["ProviderRateLimited"], "MaxAttempts": 1, "IntervalSeconds": 1},
        {"ErrorEquals": ["ProviderUnavailable"], "MaxAttempts": 2, "IntervalSeconds": 1},
    ]
    script: list[BaseException | Behaviour] = [
        ProviderRateLimited(),
        ProviderUnavailable(),
        ProviderUnavailable(),
    ]
    runner = FakeStepRunner({"a": script})

    result = await execute(workflow("a", retry=retry), runner)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert [call["attempt"] for call in runner.calls] == [0, 1, 2, 3]


async def test_first_matching_retrier_decides_even_when_its_attempts_are_used_up() -> None:
    retry = [
        {"ErrorEquals": ["ProviderRateLimited"], "MaxAttempts": 1, "IntervalSeconds": 1},
        {"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 5, "IntervalSeconds": 1},
    ]
    runner = FakeStepRunner({"a": [ProviderRateLimited(), ProviderRateLimited()]})

    result = await execute(workflow("a", retry=retry), runner)

    assert runner.trace() == [("run", "a"), ("run", "a"), ("fail", "a")]
    assert result.error == "StepFailed"


async def test_max_attempts_zero_never_retries() -> None:
    timers = FakeTimers()
    runner = FakeStepRunner({"a": [ProviderRateLimited()]})

    await execute(workflow("a", retry=[provider_retry(MaxAttempts=0)]), runner, timers=timers)

    assert runner.trace() == [("run", "a"), ("fail", "a")]
    assert timers.sleeps == []


async def test_exhausted_retries_are_caught_recorded_by_the_failure_task_then_fail() -> None:
    runner = FakeStepRunner({"a": [ProviderUnavailable("upstream 503")] * 3})

    result = await execute(workflow("a", "b", retry=[provider_retry(MaxAttempts=2)]), runner)

    assert runner.trace() == [("run", "a")] * 3 + [("fail", "a")]
    assert runner.calls[-1]["error"] == {"Error": "ProviderUnavailable", "Cause": "upstream 503"}
    assert result.status is ExecutionStatus.FAILED
    assert (result.error, result.cause) == ("StepFailed", None)


async def test_invoker_exception_fails_the_task_with_its_class_name_and_message() -> None:
    runner = FakeStepRunner({"a": [ValueError("bad prompt")]})

    await execute(workflow("a"), runner)

    assert runner.calls_for("fail", "a")[0]["error"] == {
        "Error": "ValueError",
        "Cause": "bad prompt",
    }


async def test_task_failed_names_the_error_explicitly() -> None:
    runner = FakeStepRunner({"a": [TaskFailed("Lambda.ServiceException", "try later")]})
    retry = [{"ErrorEquals": ["Lambda.ServiceException"], "MaxAttempts": 1}]

    result = await execute(workflow("a", retry=retry), runner)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert runner.trace() == [("run", "a"), ("run", "a")]


async def test_pause_parks_on_a_task_token_until_resumed_then_reruns_the_step() -> None:
    tokens = TaskTokenRegistry()
    runner = FakeStepRunner({"b": [WorkflowPaused("paused by user")]})
    run = asyncio.create_task(execute(workflow("a", "b", "c"), runner, tokens=tokens))

    token = await runner.tokens.get()
    assert not run.done() and token in tokens
    assert runner.trace() == [("run", "a"), ("run", "b"), ("park", "b")]
    tokens.send_task_success(token, {"resumed": True})
    result = await run

    assert result.status is ExecutionStatus.SUCCEEDED
    assert runner.trace() == [("run", "a"), ("run", "b"), ("park", "b"), ("run", "b"), ("run", "c")]
    # Re-entering the step starts a new state entry: its RetryCount is 0 again.
    assert [call["attempt"] for call in runner.calls_for("run", "b")] == [0, 0]
    assert token not in tokens


async def test_cancel_fails_the_parked_token_and_the_execution_ends_cancelled() -> None:
    tokens = TaskTokenRegistry()
    runner = FakeStepRunner({"a": [WorkflowPaused()]})
    run = asyncio.create_task(execute(workflow("a", "b"), runner, tokens=tokens))

    tokens.send_task_failure(await runner.tokens.get(), "WorkflowCancelled", "cancelled by user")
    result = await run

    assert result.status is ExecutionStatus.FAILED
    assert result.error == "WorkflowCancelled"
    assert runner.trace() == [("run", "a"), ("park", "a")]


async def test_a_token_answered_while_the_invoker_still_runs_is_kept() -> None:
    tokens = TaskTokenRegistry()
    runs: list[int] = []

    async def resume_from_inside_the_park_call(function_name: str, payload: dict[str, Any]) -> None:
        if payload["action"] == "run":
            runs.append(payload["attempt"])
            if len(runs) == 1:
                raise WorkflowPaused()
        if payload["action"] == "park":
            # A resume racing ahead of the park handler's return, as the design allows.
            tokens.send_task_success(payload["task_token"])

    result = await execute(workflow("a"), resume_from_inside_the_park_call, tokens=tokens)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert len(runs) == 2


async def test_unknown_or_already_answered_tokens_are_refused() -> None:
    tokens = TaskTokenRegistry()
    runner = FakeStepRunner({"a": [WorkflowPaused()]})
    run = asyncio.create_task(execute(workflow("a"), runner, tokens=tokens))
    token = await runner.tokens.get()

    tokens.send_task_success(token)
    await run

    with pytest.raises(TaskTokenNotFound):
        tokens.send_task_success(token)
    with pytest.raises(TaskTokenNotFound):
        tokens.send_task_failure("never-issued", "WorkflowCancelled")


async def test_step_timeout_seconds_fails_the_attempt_with_states_timeout() -> None:
    timers = FakeTimers()
    log: list[str] = []
    runner = FakeStepRunner({"a": [hang_until_cancelled(log, "a")]})
    definition = workflow("a")
    definition["States"]["a"]["TimeoutSeconds"] = 30

    result = await execute(definition, runner, timers=timers)

    assert log == ["a started", "a cancelled"]
    assert timers.now() == 30.0
    timed_out = result.events(HistoryEventType.TASK_TIMED_OUT)
    assert [(e.state, e.error) for e in timed_out] == [("a", "States.Timeout")]
    # Provider retriers do not match States.Timeout, so the catch-all records the failure.
    assert runner.calls_for("fail", "a")[0]["error"]["Error"] == "States.Timeout"
    assert result.error == "StepFailed"


async def test_timeout_seconds_also_bounds_the_wait_for_a_task_token() -> None:
    timers = FakeTimers()
    tokens = TaskTokenRegistry()
    runner = FakeStepRunner({"a": [WorkflowPaused()]})
    definition = workflow("a")
    definition["States"]["a__paused"]["TimeoutSeconds"] = 600

    result = await execute(definition, runner, timers=timers, tokens=tokens)

    assert timers.now() == 600.0
    assert runner.trace() == [("run", "a"), ("park", "a"), ("fail", "a")]
    assert runner.calls_for("fail", "a")[0]["error"]["Error"] == "States.Timeout"
    assert result.error == "StepFailed"
    assert tokens.pending_count == 0


async def test_states_task_failed_matches_task_errors_but_not_timeouts() -> None:
    log: list[str] = []
    definition = {
        "StartAt": "t",
        "States": {
            "t": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": payload("run", "t"),
                "ResultPath": None,
                "TimeoutSeconds": 5,
                "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1}],
                "Catch": [
                    catch(["States.Timeout"], "timed_out"),
                    catch(["States.TaskFailed"], "failed"),
                ],
                "End": True,
            },
            "timed_out": {"Type": "Fail", "Error": "TimedOut"},
            "failed": {"Type": "Fail", "Error": "Failed"},
        },
    }
    runner = FakeStepRunner({"t": [ValueError("boom"), hang_until_cancelled(log, "t")]})

    result = await execute(definition, runner)

    # ValueError was retried once by States.TaskFailed; the timeout then went to its catcher.
    assert len(runner.calls) == 2
    assert result.error == "TimedOut"


async def test_execution_timeout_ends_the_run_timed_out_and_cancels_the_step() -> None:
    timers = FakeTimers()
    log: list[str] = []
    runner = FakeStepRunner({"b": [hang_until_cancelled(log, "b")]})

    result = await execute(workflow("a", "b", timeout_seconds=60), runner, timers=timers)

    assert result.status is ExecutionStatus.TIMED_OUT
    assert result.error == "States.Timeout"
    assert log == ["b started", "b cancelled"]
    assert timers.now() == 60.0
    assert result.history[-1].type is HistoryEventType.EXECUTION_TIMED_OUT


async def test_stop_aborts_the_run_and_cancels_the_invocation_in_flight() -> None:
    log: list[str] = []
    started = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        started.set()
        await hang_until_cancelled(log, "a")(payload)

    stop = StopSignal()
    runner = FakeStepRunner({"a": [hang]})
    run = asyncio.create_task(execute(workflow("a", "b"), runner, stop=stop))

    await started.wait()
    stop.stop("Cancelled", "stopped by user")
    result = await run

    assert result.status is ExecutionStatus.ABORTED
    assert (result.error, result.cause) == ("Cancelled", "stopped by user")
    assert log == ["a started", "a cancelled"]
    assert runner.trace() == [("run", "a")]


async def test_stop_releases_a_parked_task_token() -> None:
    tokens = TaskTokenRegistry()
    stop = StopSignal()
    runner = FakeStepRunner({"a": [WorkflowPaused()]})
    run = asyncio.create_task(execute(workflow("a"), runner, tokens=tokens, stop=stop))
    token = await runner.tokens.get()

    stop.stop()
    result = await run

    assert result.status is ExecutionStatus.ABORTED
    with pytest.raises(TaskTokenNotFound):
        tokens.send_task_success(token)


async def test_a_stop_requested_before_the_start_runs_nothing() -> None:
    stop = StopSignal()
    stop.stop()
    runner = FakeStepRunner()

    result = await execute(workflow("a"), runner, stop=stop)

    assert result.status is ExecutionStatus.ABORTED
    assert runner.calls == []


async def test_stopping_a_finished_run_changes_nothing() -> None:
    stop = StopSignal()

    result = await execute(workflow("a"), FakeStepRunner(), stop=stop)
    stop.stop()

    assert result.status is ExecutionStatus.SUCCEEDED


async def test_a_failed_parallel_branch_fails_the_parallel_and_cancels_its_siblings() -> None:
    log: list[str] = []
    runner = FakeStepRunner(
        {
            "b": [ProviderUnavailable("down")] * 4,
            "c": [hang_until_cancelled(log, "c")],
            "d": [hang_until_cancelled(log, "d")],
        }
    )

    result = await execute(workflow("a", ("b", "c", "d"), "e"), runner)

    assert result.status is ExecutionStatus.FAILED
    assert result.error == "StepFailed"
    assert sorted(log) == ["c cancelled", "c started", "d cancelled", "d started"]
    assert ("run", "e") not in runner.trace()
    failed = result.events(HistoryEventType.PARALLEL_STATE_FAILED)
    assert [(e.state, e.error) for e in failed] == [("parallel__1", "StepFailed")]


async def test_the_catch_of_a_parallel_handles_a_branch_failure() -> None:
    definition = workflow(("b", "c"))
    definition["States"]["parallel__0"]["Catch"] = [catch(["StepFailed"], "recover")]
    definition["States"]["parallel__0"]["Next"] = "Done"
    definition["States"]["recover"] = {"Type": "Pass", "Next": "Done"}
    runner = FakeStepRunner({"b": [ValueError("bad")]})

    result = await execute(definition, runner)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output == {**INPUT, "error": {"Error": "StepFailed", "Cause": None}}
    passed = result.events(HistoryEventType.PASS_STATE_ENTERED)
    assert [e.state for e in passed] == ["recover"]


async def test_a_payload_path_missing_from_the_input_fails_the_execution_uncaught() -> None:
    runner = FakeStepRunner()

    result = await run_execution(
        load_state_machine(workflow("a")),
        {"not_execution_id": "x"},
        execution_arn=EXECUTION_ARN,
        invoker=runner,
        token_registry=TaskTokenRegistry(),
        timers=FakeTimers(),
        rng=random.Random(0),
    )

    # States.Runtime escapes even the States.ALL catcher, as on AWS.
    assert result.status is ExecutionStatus.FAILED
    assert result.error == "States.Runtime"
    assert runner.calls == []


async def test_a_fail_state_ends_the_execution_with_its_error_and_cause() -> None:
    definition = {
        "StartAt": "first",
        "States": {
            "first": {"Type": "Pass", "Next": "stop"},
            "stop": {"Type": "Fail", "Error": "Nope", "Cause": "said no"},
        },
    }

    result = await execute(definition, FakeStepRunner())

    assert (result.status, result.error, result.cause) == (
        ExecutionStatus.FAILED,
        "Nope",
        "said no",
    )
    assert [e.type for e in result.history] == [
        HistoryEventType.EXECUTION_STARTED,
        HistoryEventType.PASS_STATE_ENTERED,
        HistoryEventType.PASS_STATE_EXITED,
        HistoryEventType.FAIL_STATE_ENTERED,
        HistoryEventType.EXECUTION_FAILED,
    ]


async def test_an_invoker_mutating_its_payload_cannot_change_the_state_input() -> None:
    async def vandal(function_name: str, payload: dict[str, Any]) -> None:
        payload["execution_id"] = "changed"
        if "error" in payload:
            payload["error"]["Error"] = "changed"

    result = await execute(workflow("a", "b"), vandal)

    assert result.output == INPUT


async def test_cancelling_the_task_running_an_execution_cancels_its_work() -> None:
    log: list[str] = []
    started = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        started.set()
        await hang_until_cancelled(log, "a")(payload)

    run = asyncio.create_task(execute(workflow("a"), FakeStepRunner({"a": [hang]})))
    await started.wait()

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert log == ["a started", "a cancelled"]


async def test_a_step_that_swallows_the_runs_cancellation_still_stops_the_run() -> None:
    """A library under the step may swallow a cancellation: the run stops all the same, and
    no later step is called (a top-scope step is awaited in the run's own task)."""
    log: list[str] = []
    started = asyncio.Event()

    async def swallows(payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("a swallowed its cancellation")

    async def later(payload: dict[str, Any]) -> None:
        log.append("b called")

    run = asyncio.create_task(
        execute(workflow("a", "b"), FakeStepRunner({"a": [swallows], "b": [later]}))
    )
    await started.wait()

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert log == ["a swallowed its cancellation"]


@pytest.mark.parametrize("levels", [("a",), (("a", "b"),)], ids=["top scope", "parallel"])
async def test_a_cancellation_the_invoker_raises_of_its_own_fails_only_the_task(
    levels: tuple[str | tuple[str, ...], ...],
) -> None:
    """Nobody cancelled the run: the step's own ``CancelledError`` (a library that lets one
    escape) is the task's failure, which Catch routes, not the run's cancellation. A step
    of the top scope is awaited in the run's own task, a branch's in a task of its own."""

    async def escapes(payload: dict[str, Any]) -> None:
        raise asyncio.CancelledError("not the run's")

    result = await execute(workflow(*levels), FakeStepRunner({"a": [escapes]}))

    assert result.status is ExecutionStatus.FAILED  # through the Catch, as any failure
    [failed] = result.events(HistoryEventType.TASK_FAILED)
    assert (failed.state, failed.error) == ("a", "CancelledError")


async def test_hundreds_of_executions_wait_concurrently_in_one_event_loop() -> None:
    machine = load_state_machine(workflow("a", timeout_seconds=60))
    timers = SystemTimers()
    tokens = TaskTokenRegistry()

    in_flight = peak = 0

    async def slow_provider(function_name: str, payload: dict[str, Any]) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1

    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            run_execution(
                machine,
                {"execution_id": f"exec-{n}"},
                execution_arn=f"arn:exec-{n}",
                invoker=slow_provider,
                token_registry=tokens,
                timers=timers,
                rng=random.Random(n),
            )
            for n in range(500)
        )
    )
    elapsed = time.perf_counter() - started

    assert all(r.status is ExecutionStatus.SUCCEEDED for r in results)
    # Every call waits at the same time (serially this would take 100 s); the wall-time
    # bound is loose so a loaded CI machine cannot make the test flaky.
    assert peak == 500
    assert elapsed < 20.0
