"""The local engine's interpreter of the compiled state machine (``docs/asl.md``).

:func:`load_state_machine` refuses, with the path of the first offending field, anything
outside the subset the compiler emits; :func:`run_execution` runs a loaded machine on
asyncio with the semantics Step Functions gives that subset:

- Retry: the first retrier whose ``ErrorEquals`` matches decides (even when its attempts are
  used up); each retrier counts its own retries; the wait is ``IntervalSeconds *
  BackoffRate ** n`` capped by ``MaxDelaySeconds``, and with FULL jitter a uniform draw in
  ``[0, wait]``. ``$$.State.RetryCount`` counts every retry of the current state entry.
- Error names: ``States.ALL`` matches everything, ``States.TaskFailed`` everything but
  ``States.Timeout``; ``States.Runtime`` (a payload path missing from the input) is never
  retried or caught and fails the execution.
- Catch stores ``{"Error", "Cause"}`` at ``$.error`` beside the rest of the state input.
- Task ``TimeoutSeconds`` bounds each attempt, the invocation and any task-token wait,
  and fails it with ``States.Timeout``; the machine's ``TimeoutSeconds`` ends the
  execution as TIMED_OUT.
- Parallel runs its branches concurrently; the first branch to fail fails the Parallel
  with its error (then its Catch applies) and the other branches are stopped at once; an
  invocation they had under way runs on (as a Lambda invocation does on AWS) until it ends
  or the run does, and the same call made again waits for it instead of invoking twice.
- ``.waitForTaskToken``: the token is issued before the invoker is called and answered
  through :class:`TaskTokenRegistry` (``send_task_success`` / ``send_task_failure``).
- :class:`StopSignal` is StopExecution: the run ends ABORTED, in-flight work cancelled.

Errors from the invoker follow Lambda: :class:`TaskFailed` names its error explicitly; any
other exception fails the task with the exception's class name as the error (which is how
``WorkflowPaused`` raised by the step runner reaches the ``WorkflowPaused`` catcher) and
``str(exc)`` as the cause.

Every wait is an awaitable and all time comes from the injected :class:`Timers`, so one
event loop carries hundreds of executions, and tests run backoffs and timeouts on a
``FakeTimers`` without sleeping.
"""

from llm_orchestrator.engine.asl.history import (
    ExecutionResult,
    ExecutionStatus,
    HistoryEvent,
    HistoryEventType,
)
from llm_orchestrator.engine.asl.interpreter import Invoker, StopSignal, TaskFailed, run_execution
from llm_orchestrator.engine.asl.loader import (
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
    load_state_machine,
)
from llm_orchestrator.engine.asl.model import StateMachine, UnsupportedDefinition
from llm_orchestrator.engine.asl.timers import FakeTimers, SystemTimers, Timers
from llm_orchestrator.engine.asl.tokens import TaskTokenNotFound, TaskTokenRegistry

__all__ = [
    "LAMBDA_INVOKE",
    "LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN",
    "Timers",
    "ExecutionResult",
    "ExecutionStatus",
    "FakeTimers",
    "HistoryEvent",
    "HistoryEventType",
    "Invoker",
    "StateMachine",
    "StopSignal",
    "SystemTimers",
    "TaskFailed",
    "TaskTokenNotFound",
    "TaskTokenRegistry",
    "UnsupportedDefinition",
    "load_state_machine",
    "run_execution",
]
