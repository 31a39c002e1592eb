"""Run one compiled state machine on moto's Step Functions simulator and on our interpreter.

The engine oracle (``tests/integration/test_engine_oracle.py``) needs both engines to call
the same deterministic step function. :class:`ScriptedStepFunction` stands in for the step
runner: it answers ``run`` / ``park`` / ``fail`` payloads from a :class:`Script`, raising
the same exception classes the real step runner raises, and records every call.

- On moto, Step Functions invokes the step runner through moto's Lambda backend, which
  would start Docker. :class:`MotoStepFunctions` replaces ``LambdaFunction.invoke`` (the
  function's code, the narrowest seam behind Lambda's wire protocol) with the scripted
  function, and reports an exception the way the Lambda Python runtime does: an
  ``Unhandled`` function error whose payload names ``errorType``. Step Functions then fails
  the task with that ``errorType`` as the error name, exactly as on AWS.
- Locally, :func:`run_locally` gives the same scripted function to ``run_execution`` as
  its invoker, as ``LocalEngine`` does with ``StepRunner.handle``.

Retry backoff is recorded instead of slept on both sides, so the oracle stays fast and can
still compare how often, and how long, each engine chose to wait.

Written against moto 5.2.x, whose ``stepfunctions.parser`` (LocalStack's ASL interpreter) runs
executions when ``execute_state_machine`` is on. Two of its internals are patched, so a moto
upgrade may move them: ``moto.awslambda.models.LambdaFunction.invoke(self, body,
request_headers, response_headers)`` and the ``time`` module used by
``moto.stepfunctions.parser.asl.component.common.retry.retrier_decl``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from llm_orchestrator.engine.asl import (
    HistoryEventType,
    SystemTimers,
    TaskTokenRegistry,
    load_state_machine,
    run_execution,
)
from llm_orchestrator.providers.errors import ProviderError
from llm_orchestrator.steps.errors import WorkflowCancelled
from tests.moto_support import REGION

EXECUTION_ID = "exec-oracle"
"""The execution input's ``execution_id``: every payload must carry it back."""
CANCELLED_CAUSE = "the execution was cancelled"
GATE_TIMEOUT_SECONDS = 5.0
RUN_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.01


class ParkAnswer(enum.Enum):
    """How the resumer answers a parked task token (the resume / cancel API's role)."""

    RESUME = "resume"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Fault:
    """An exception the scripted step raises; built afresh per call, like a real one."""

    kind: type[Exception]
    message: str = "scripted failure"

    def build(self) -> Exception:
        if issubclass(self.kind, ProviderError):
            return self.kind(self.message, provider="openai")
        return self.kind(self.message)


@dataclass(frozen=True)
class Hang:
    """The step succeeds, but only after ``seconds`` (to run into a Task's TimeoutSeconds)."""

    seconds: float


@dataclass(frozen=True)
class _Answer:
    result: dict[str, Any] | Exception
    delay: float = 0.0
    gate: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Script:
    """What the step function does, identically on both engines.

    ``faults[step]`` lists the outcome of the step's first, second, … ``run`` call
    (``None`` succeeds at once); calls past the list succeed. ``parks`` answers the first, second,
    … ``park`` call. ``gates[step]`` holds a step's answer until each listed step has been
    called: a failing branch of a Parallel waits for its siblings, so that which siblings
    ran does not depend on thread timing.
    """

    faults: Mapping[str, Sequence[Fault | Hang | None]] = field(default_factory=dict)
    parks: Sequence[ParkAnswer] = ()
    gates: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One invocation of the step function, as the oracle compares it.

    ``result`` is ``"ok"`` or the error name raised; ``error`` / ``cause`` are what a
    ``fail`` payload carried at ``$.error`` (the cause with Lambda's JSON envelope
    removed, see :func:`unwrap_lambda_cause`).
    """

    action: str
    step_id: str | None
    attempt: int | None
    execution_id: str
    function_name: str
    result: str
    error: str | None = None
    cause: str | None = None


def unwrap_lambda_cause(cause: str | None) -> str | None:
    """The ``errorMessage`` inside a Lambda function-error cause, else ``cause`` itself.

    On AWS (and moto) a Lambda function error's Cause is the function's JSON error payload;
    the local interpreter uses ``str(exc)``, which is that payload's ``errorMessage``.
    """
    if cause is None:
        return None
    try:
        envelope = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(envelope, dict) and "errorType" in envelope:
        return str(envelope.get("errorMessage", ""))
    return cause


class ScriptedStepFunction:
    """The deterministic stand-in for the step runner; thread-safe (moto calls from threads)."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._runs: Counter[str] = Counter()
        self._called: set[str] = set()
        self._parked: list[tuple[str, ParkAnswer]] = []
        self._parks = 0
        self._in_flight = 0

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def take_parked(self) -> list[tuple[str, ParkAnswer]]:
        """Task tokens parked since the last take, with how to answer each."""
        with self._lock:
            parked, self._parked = self._parked, []
            return parked

    def call_blocking(self, function_name: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Answer from a thread (moto's Lambda invocation)."""
        answer = self._enter(function_name, payload)
        try:
            with self._lock:
                if not self._lock.wait_for(
                    lambda: answer.gate <= self._called, GATE_TIMEOUT_SECONDS
                ):
                    raise AssertionError(f"gate {sorted(answer.gate)} never opened")
            time.sleep(answer.delay)
            return _finish(answer.result)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def wait_idle(self, timeout: float) -> None:
        """Wait until no blocking call is in progress (moto lets abandoned calls run on)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._in_flight == 0, timeout):
                raise AssertionError("a step-function call never returned")

    async def call_async(self, function_name: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Answer on the event loop (the local interpreter's invoker), never blocking it."""
        answer = self._enter(function_name, payload, counted=False)
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        while not self._gate_open(answer.gate):
            if time.monotonic() > deadline:
                raise AssertionError(f"gate {sorted(answer.gate)} never opened")
            await asyncio.sleep(POLL_SECONDS)
        await asyncio.sleep(answer.delay)
        return _finish(answer.result)

    def _gate_open(self, gate: frozenset[str]) -> bool:
        with self._lock:
            return gate <= self._called

    def _enter(
        self, function_name: str, payload: Mapping[str, Any], *, counted: bool = True
    ) -> _Answer:
        """Record the call and decide its outcome, atomically, in invocation order."""
        action = str(payload["action"])
        step_id = payload.get("step_id")
        outcome: dict[str, Any] | Exception
        gate: frozenset[str] = frozenset()
        delay = 0.0
        error = cause = None
        with self._lock:
            self._in_flight += counted
            if action == "run":
                assert step_id is not None
                nth = self._runs[step_id]
                self._runs[step_id] += 1
                faults = self._script.faults.get(step_id, ())
                fault = faults[nth] if nth < len(faults) else None
                outcome = {"step_id": step_id, "status": "completed", "reused": False}
                if isinstance(fault, Hang):
                    delay = fault.seconds
                elif fault is not None:
                    outcome = fault.build()
                    gate = self._script.gates.get(step_id, frozenset())
                self._called.add(step_id)
            elif action == "park":
                answer = self._script.parks[self._parks]
                self._parks += 1
                self._parked.append((str(payload["task_token"]), answer))
                outcome = {"parked": True}
            elif action == "fail":
                error, cause = payload["error"]["Error"], payload["error"]["Cause"]
                outcome = {"failed": True}
            else:
                outcome = ValueError(f"unknown step-runner action {action!r}")
            result = type(outcome).__name__ if isinstance(outcome, Exception) else "ok"
            self._calls.append(
                Call(
                    action=action,
                    step_id=step_id,
                    attempt=payload.get("attempt"),
                    execution_id=str(payload["execution_id"]),
                    function_name=function_name,
                    result=result,
                    error=error,
                    cause=unwrap_lambda_cause(cause),
                )
            )
            self._lock.notify_all()
        return _Answer(outcome, delay, gate)


def _finish(outcome: dict[str, Any] | Exception) -> dict[str, Any]:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@dataclass(frozen=True)
class EngineRun:
    """How one engine ran one machine: what the oracle compares."""

    status: str
    error: str | None
    cause: str | None
    calls: list[Call]
    task_errors: Counter[str]
    """Error names of the TaskFailed and TaskTimedOut events in the history."""
    retry_delays: list[float]


# -- local -------------------------------------------------------------------------------


class InstantBackoffTimers(SystemTimers):
    """Real time for deadlines, but retry backoff is recorded instead of slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


async def run_locally(definition_text: str, script: Script) -> EngineRun:
    """Run the machine on the local interpreter with the scripted step function."""
    function = ScriptedStepFunction(script)
    registry = TaskTokenRegistry()
    timers = InstantBackoffTimers()

    async def invoke(function_name: str, payload: dict[str, Any]) -> Any:
        return await function.call_async(function_name, payload)

    execution = asyncio.ensure_future(
        run_execution(
            load_state_machine(definition_text),
            {"execution_id": EXECUTION_ID},
            execution_arn=f"local:{EXECUTION_ID}",
            invoker=invoke,
            token_registry=registry,
            timers=timers,
            rng=random.Random(0),
        )
    )
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not execution.done():
        for token, answer in function.take_parked():
            if answer is ParkAnswer.RESUME:
                registry.send_task_success(token, {"resumed": True})
            else:
                registry.send_task_failure(token, WorkflowCancelled.__name__, CANCELLED_CAUSE)
        if time.monotonic() > deadline:
            execution.cancel()
            raise AssertionError("the local execution did not finish in time")
        await asyncio.wait([execution], timeout=POLL_SECONDS)
    result = execution.result()
    failed = result.events(HistoryEventType.TASK_FAILED, HistoryEventType.TASK_TIMED_OUT)
    return EngineRun(
        status=result.status.value,
        error=result.error,
        cause=result.cause,
        calls=function.calls,
        task_errors=Counter(str(event.error) for event in failed),
        retry_delays=timers.sleeps,
    )


# -- moto --------------------------------------------------------------------------------

_TASK_ERROR_EVENTS = {
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
}
SFN_ROLE = "arn:aws:iam::123456789012:role/sfn"
FUNCTION_NAME = "llmo-step-runner"


@dataclass
class MotoStepFunctions:
    """moto's Step Functions simulator, its Lambda invocations answered by a script.

    Build it with :func:`moto_step_functions` inside ``mock_aws`` (with
    ``execute_state_machine`` on), which patches the seams for the test's duration.
    """

    sfn: Any
    function_arn: str
    retry_delays: list[float] = field(default_factory=list)
    _function: ScriptedStepFunction | None = None
    _runs: int = 0

    def invoke(self, body: str | bytes, response_headers: dict[str, str]) -> bytes:
        """``LambdaFunction.invoke``'s body, as the Lambda Python runtime would answer it."""
        function = self._function
        if function is None:
            raise AssertionError("the step function was invoked outside a run")
        try:
            answer: Any = function.call_blocking(self.function_arn, json.loads(body or "{}"))
        except Exception as exc:
            response_headers["x-amz-function-error"] = "Unhandled"
            answer = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}
        return json.dumps(answer).encode()

    def run(self, definition_text: str, script: Script) -> EngineRun:
        """Create the machine, start one execution, answer its parks, wait for its end."""
        self._runs += 1
        self._function = function = ScriptedStepFunction(script)
        self.retry_delays.clear()
        machine = self.sfn.create_state_machine(
            name=f"oracle-{self._runs}", definition=definition_text, roleArn=SFN_ROLE
        )
        execution_arn = self.sfn.start_execution(
            stateMachineArn=machine["stateMachineArn"],
            name=f"run-{self._runs}",
            input=json.dumps({"execution_id": EXECUTION_ID}),
        )["executionArn"]
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            for token, answer in function.take_parked():
                if answer is ParkAnswer.RESUME:
                    self.sfn.send_task_success(taskToken=token, output='{"resumed": true}')
                else:
                    self.sfn.send_task_failure(
                        taskToken=token, error=WorkflowCancelled.__name__, cause=CANCELLED_CAUSE
                    )
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise AssertionError("the moto execution did not finish in time")
            time.sleep(POLL_SECONDS)
        function.wait_idle(RUN_TIMEOUT_SECONDS)
        events = self.sfn.get_execution_history(executionArn=execution_arn)["events"]
        return EngineRun(
            status=described["status"],
            error=described.get("error"),
            cause=described.get("cause"),
            calls=function.calls,
            task_errors=Counter(
                event[details]["error"]
                for event in events
                for kind, details in _TASK_ERROR_EVENTS.items()
                if event["type"] == kind
            ),
            retry_delays=list(self.retry_delays),
        )


def moto_step_functions(patch: Callable[[Any, str, Any], None]) -> MotoStepFunctions:
    """Set up moto (already mocked) for oracle runs; ``patch`` is ``monkeypatch.setattr``.

    Creates the step-runner function in moto's Lambda (so Step Functions' invoke finds
    it), routes its invocations to the scripted step function, and records moto's retry
    backoff instead of sleeping it (moto's retrier calls ``time.sleep`` in its module).
    """
    import boto3
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="step-runner", AssumeRolePolicyDocument="{}")["Role"]
    created = boto3.client("lambda", region_name=REGION).create_function(
        FunctionName=FUNCTION_NAME,
        Runtime="python3.11",
        Role=role["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": b"not run: invocations are answered by the script"},
    )
    engine = MotoStepFunctions(
        sfn=boto3.client("stepfunctions", region_name=REGION),
        function_arn=created["FunctionArn"],
    )

    def invoke(
        self: LambdaFunction, body: str, request_headers: Any, response_headers: Any
    ) -> bytes:
        return engine.invoke(body, response_headers)

    patch(LambdaFunction, "invoke", invoke)
    patch(retrier_decl, "time", SimpleNamespace(sleep=engine.retry_delays.append))
    return engine


def run_call_epochs(calls: Sequence[Call]) -> Iterator[Counter[Call] | Call]:
    """``calls`` with each stretch of ``run`` calls as a multiset, other calls kept as they are.

    Concurrent branches may call steps in any order, but nothing in a stretch can move past
    a ``park`` or ``fail`` call, which only a failed top-level item leads to.
    """
    stretch: Counter[Call] = Counter()
    for call in calls:
        if call.action == "run":
            stretch[call] += 1
            continue
        if stretch:
            yield stretch
            stretch = Counter()
        yield call
    if stretch:
        yield stretch
