"""Golden workflows run alike on moto's Step Functions simulator and on our interpreter.

DESIGN.md makes moto the oracle for the local engine: the same compiled definition, run
on both with the same deterministic step function, must end with the same status and
error, call the steps in the same order, and see the same task error names. Each golden
case also states the outcome it expects, so the two engines cannot agree on a wrong one.

Call order: a chain must match exactly. Where branches of a Parallel run concurrently,
each stretch of ``run`` calls between two ``park`` / ``fail`` calls is compared as a
multiset, and each engine's order must respect the workflow's dependencies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from llm_orchestrator.compiler import compile_workflow, to_json
from llm_orchestrator.providers.errors import (
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderUnavailable,
    StructuredOutputInvalid,
)
from llm_orchestrator.steps.errors import (
    StepConfigurationError,
    WorkflowCancelled,
    WorkflowPaused,
)
from llm_orchestrator.workflows import WorkflowDefinition, parse_definition
from tests.compiler_support import definition, step
from tests.moto_support import mocked_aws
from tests.oracle_support import (
    EXECUTION_ID,
    Call,
    EngineRun,
    Fault,
    Hang,
    MotoStepFunctions,
    ParkAnswer,
    Script,
    moto_step_functions,
    run_call_epochs,
    run_locally,
)
from tests.samples import INGEST_WORKFLOW, RAG_WORKFLOW

STATES_TIMEOUT = "States.Timeout"
FAST_RETRY = {"max_attempts": 2, "backoff_seconds": 1, "backoff_rate": 2.0}
"""One retry, at most 1 s apart: the bound both engines' recorded backoff must keep."""
MAX_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class GoldenCase:
    definition: WorkflowDefinition
    script: Script = field(default_factory=Script)
    status: str = "SUCCEEDED"
    error: str | None = None
    retries: int = 0
    """How many provider retries (backoff waits) the run takes."""
    trace: tuple[str, ...] | None = None
    """The expected calls, as :func:`trace` writes them (where only one order is possible)."""


def trace(calls: list[Call]) -> tuple[str, ...]:
    """Calls as ``run b#1 ok``, ``park b``, ``fail b ProviderBadRequest`` (``-``: no step)."""
    lines = []
    for call in calls:
        where = call.step_id or "-"
        if call.action == "run":
            lines.append(f"run {where}#{call.attempt} {call.result}")
        elif call.action == "fail":
            lines.append(f"fail {where} {call.error}")
        else:
            lines.append(f"{call.action} {where}")
    return tuple(lines)


def _wide() -> WorkflowDefinition:
    leaves = [step(f"w{i}", "root") for i in range(8)]
    return definition(step("root"), *leaves, step("sink", *(f"w{i}" for i in range(8))))


def _diamond(**fields: object) -> WorkflowDefinition:
    """a → (b ‖ c) → d; ``fields`` go to b and c."""
    return definition(
        step("a"), step("b", "a", **fields), step("c", "a", **fields), step("d", "b", "c")
    )


def _chain(**fields: object) -> WorkflowDefinition:
    """a → b → c; ``fields`` go to b (its retry policy, its timeout)."""
    return definition(step("a"), step("b", "a", **fields), step("c", "b"))


rate_limited = Fault(ProviderRateLimited, "429 Too Many Requests")
unavailable = Fault(ProviderUnavailable, "503 Service Unavailable")
bad_request = Fault(ProviderBadRequest, "400 unknown model 'm'")
paused = Fault(WorkflowPaused, f"execution '{EXECUTION_ID}' is paused")
cancelled = Fault(WorkflowCancelled, f"execution '{EXECUTION_ID}' was cancelled")
off_schema = Fault(StructuredOutputInvalid, "step 'b': at $.age: 'x' is not of type 'integer'")
unconfigured = Fault(StepConfigurationError, "vector database 'pinecone' is not configured")

GOLDEN: dict[str, GoldenCase] = {
    "single_step": GoldenCase(definition(step("only")), trace=("run only#0 ok",)),
    "chain": GoldenCase(_chain(), trace=("run a#0 ok", "run b#0 ok", "run c#0 ok")),
    "diamond": GoldenCase(_diamond()),
    "wide_level": GoldenCase(_wide()),
    "retry_429_once_in_a_chain": GoldenCase(
        _chain(retry=FAST_RETRY),
        Script(faults={"b": [rate_limited]}),
        retries=1,
        trace=("run a#0 ok", "run b#0 ProviderRateLimited", "run b#1 ok", "run c#0 ok"),
    ),
    "retry_429_once_in_a_parallel_branch": GoldenCase(
        _diamond(retry=FAST_RETRY), Script(faults={"c": [rate_limited]}), retries=1
    ),
    "retries_exhausted": GoldenCase(
        _chain(retry=FAST_RETRY),
        Script(faults={"b": [unavailable, unavailable]}),
        status="FAILED",
        error="StepFailed",
        retries=1,
        trace=(
            "run a#0 ok",
            "run b#0 ProviderUnavailable",
            "run b#1 ProviderUnavailable",
            "fail b ProviderUnavailable",
        ),
    ),
    "permanent_failure_is_recorded_then_fails": GoldenCase(
        _chain(),
        Script(faults={"b": [bad_request]}),
        status="FAILED",
        error="StepFailed",
        trace=("run a#0 ok", "run b#0 ProviderBadRequest", "fail b ProviderBadRequest"),
    ),
    # A reply that missed its schema twice (inside one invocation) is permanent: the
    # step's retry policy does not call it again on either engine.
    "structured_output_invalid_is_not_retried": GoldenCase(
        _chain(retry=FAST_RETRY),
        Script(faults={"b": [off_schema]}),
        status="FAILED",
        error="StepFailed",
        trace=("run a#0 ok", "run b#0 StructuredOutputInvalid", "fail b StructuredOutputInvalid"),
    ),
    "permanent_failure_in_a_parallel_branch": GoldenCase(
        _diamond(),
        # c is the last branch; it fails only once its sibling b has been called.
        Script(faults={"c": [bad_request]}, gates={"c": frozenset({"b"})}),
        status="FAILED",
        error="StepFailed",
    ),
    "vector_search_configuration_error": GoldenCase(
        parse_definition(RAG_WORKFLOW),
        Script(faults={"search_docs": [unconfigured]}),
        status="FAILED",
        error="StepFailed",
        trace=(
            "run embed_query#0 ok",
            "run search_docs#0 StepConfigurationError",
            "fail search_docs StepConfigurationError",
        ),
    ),
    "vector_upsert_rate_limited_then_written": GoldenCase(
        parse_definition(
            {
                **INGEST_WORKFLOW,
                "steps": [
                    INGEST_WORKFLOW["steps"][0],
                    {**INGEST_WORKFLOW["steps"][1], "retry": FAST_RETRY},
                ],
            }
        ),
        Script(faults={"store_docs": [rate_limited]}),
        retries=1,
        trace=(
            "run embed_docs#0 ok",
            "run store_docs#0 ProviderRateLimited",
            "run store_docs#1 ok",
        ),
    ),
    "step_timeout": GoldenCase(
        _chain(timeout_seconds=1),
        Script(faults={"b": [Hang(1.6)]}),
        status="FAILED",
        error="StepFailed",
        trace=("run a#0 ok", "run b#0 ok", f"fail b {STATES_TIMEOUT}"),
    ),
    "cancelled_on_entry": GoldenCase(
        _chain(),
        Script(faults={"b": [cancelled]}),
        status="FAILED",
        error="WorkflowCancelled",
        trace=("run a#0 ok", "run b#0 WorkflowCancelled"),
    ),
    "pause_park_resume": GoldenCase(
        _chain(),
        Script(faults={"b": [paused]}, parks=[ParkAnswer.RESUME]),
        trace=("run a#0 ok", "run b#0 WorkflowPaused", "park b", "run b#0 ok", "run c#0 ok"),
    ),
    "pause_park_resume_a_parallel": GoldenCase(
        _diamond(),
        Script(faults={"c": [paused]}, parks=[ParkAnswer.RESUME], gates={"c": frozenset({"b"})}),
    ),
    "pause_park_then_cancel": GoldenCase(
        _chain(),
        Script(faults={"b": [paused]}, parks=[ParkAnswer.CANCEL]),
        status="FAILED",
        error="WorkflowCancelled",
        trace=("run a#0 ok", "run b#0 WorkflowPaused", "park b"),
    ),
}


@pytest.fixture
def moto_sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoStepFunctions]:
    with mocked_aws(monkeypatch):
        yield moto_step_functions(monkeypatch.setattr)


def is_chain(defn: WorkflowDefinition) -> bool:
    """True when the steps can run in one order only, so calls must match exactly."""
    return all(
        list(s.depends_on) == ([defn.steps[i - 1].id] if i else [])
        for i, s in enumerate(defn.steps)
    )


def assert_respects_dependencies(defn: WorkflowDefinition, calls: list[Call]) -> None:
    """Every ``run`` of a step comes after a successful ``run`` of each step it depends on."""
    done: set[str] = set()
    for call in calls:
        if call.action != "run" or call.step_id is None:
            continue
        missing = set(defn.step(call.step_id).depends_on) - done
        assert not missing, f"{call.step_id} ran before {sorted(missing)}"
        if call.result == "ok":
            done.add(call.step_id)


def comparable(calls: list[Call]) -> list[Call]:
    """``calls`` without the one known, harmless difference: a task timeout's Cause.

    moto (whose ASL parser follows AWS) gives ``States.Timeout`` an empty Cause; the
    interpreter says how long the task had. The step runner's ``fail`` fills an empty
    Cause with its own wording, so only the recorded message's wording differs.
    """
    return [replace(c, cause=None) if c.error == STATES_TIMEOUT else c for c in calls]


def assert_engines_agree(defn: WorkflowDefinition, moto: EngineRun, local: EngineRun) -> None:
    assert (local.status, local.error, local.cause) == (moto.status, moto.error, moto.cause)
    assert local.task_errors == moto.task_errors
    assert len(local.retry_delays) == len(moto.retry_delays)
    for calls in (moto.calls, local.calls):
        assert_respects_dependencies(defn, calls)
    on_moto, locally = comparable(moto.calls), comparable(local.calls)
    if is_chain(defn):
        assert locally == on_moto
    else:
        assert list(run_call_epochs(locally)) == list(run_call_epochs(on_moto))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_given_a_golden_workflow_when_moto_and_the_interpreter_run_it_then_they_agree(
    moto_sfn: MotoStepFunctions, name: str
) -> None:
    case = GOLDEN[name]
    text = to_json(compile_workflow(case.definition, step_runner_arn=moto_sfn.function_arn))

    on_moto = moto_sfn.run(text, case.script)
    locally = asyncio.run(run_locally(text, case.script))

    assert_engines_agree(case.definition, on_moto, locally)
    assert (locally.status, locally.error) == (case.status, case.error)
    if case.trace is not None:
        assert trace(locally.calls) == case.trace
    assert len(locally.retry_delays) == case.retries
    for delay in (*locally.retry_delays, *on_moto.retry_delays):
        assert 0 <= delay <= MAX_BACKOFF_SECONDS
    assert {(c.execution_id, c.function_name) for c in locally.calls} == {
        (EXECUTION_ID, moto_sfn.function_arn)
    }
