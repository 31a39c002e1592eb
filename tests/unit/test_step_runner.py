"""The step runner against an in-memory store and scripted providers (no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from llm_orchestrator.providers import (
    ChatRequest,
    ChatResult,
    CredentialResolver,
    EmbeddingProvider,
    EnvCredentialResolver,
    LLMProvider,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRegistry,
)
from llm_orchestrator.steps.errors import (
    ExecutionEnded,
    StepConfigurationError,
    WorkflowCancelled,
    WorkflowPaused,
)
from llm_orchestrator.steps.runner import StepRunner
from llm_orchestrator.store.step_runs import StepContext, StepUsage
from llm_orchestrator.store.usage import CallRow

EXECUTION = "exec-1"


def _step(step_id: str, prompt: str, output: str, depends_on: list[str] | None = None) -> Any:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": "gpt-4",
        "prompt": prompt,
        "output": [output],
        "depends_on": depends_on or [],
    }


ACTIVE = ("pending", "running", "paused")


@dataclass
class MemoryStore:
    """The rows the step runner touches, as plain dicts.

    It refuses what ``ExecutionRepository`` refuses: ``start_step`` starts nothing once the
    step has completed or the execution was cancelled or has ended, and ``complete_step``
    writes nothing unless the attempt is still running. ``between_read_and_start`` runs
    once, after the runner's first ``step_context`` read (``begin_step``'s snapshot), to
    play another process acting in that window.
    """

    definition_json: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    pause_requested: bool = False
    cancel_requested: bool = False
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    parked: dict[str | None, str] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    """The execution's recorded failure (``error`` on its row while it is still active)."""
    checkpoints: list[str] = field(default_factory=list)
    between_read_and_start: Callable[[MemoryStore], None] | None = None

    async def step_context(self, execution_id: str, step_id: str) -> StepContext | None:
        context = StepContext(
            status=self.status,
            pause_requested=self.pause_requested,
            cancel_requested=self.cancel_requested,
            inputs=self.inputs,
            step_status=self.steps.get(step_id, {}).get("status"),
            outputs={
                sid: row["outputs"]
                for sid, row in self.steps.items()
                if row["status"] == "completed"
            },
        )
        hook, self.between_read_and_start = self.between_read_and_start, None
        if hook is not None:
            hook(self)
        return context

    async def definition(self, execution_id: str) -> dict[str, Any] | None:
        return self.definition_json

    async def begin_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        step_type: str,
        provider: str | None,
        month: date | None = None,
        price_keys: Sequence[tuple[str, str]] = (),
    ) -> tuple[StepContext | None, bool]:
        # As the one statement does: the context as of its start, then the attempt counted
        # against the rows as they are once locked (``between_read_and_start`` plays a
        # commit landing in between).
        context = await self.step_context(execution_id, step_id)
        if self.pause_requested:
            return context, False
        began = await self.start_step(execution_id, step_id, step_type=step_type, provider=provider)
        return context, began

    async def start_step(
        self, execution_id: str, step_id: str, *, step_type: str, provider: str | None
    ) -> bool:
        if self.status not in ACTIVE or self.cancel_requested:
            return False
        row = self.steps.setdefault(step_id, {"status": "running", "attempts": 0})
        if row["status"] == "completed":
            return False
        row.update(status="running", attempts=row["attempts"] + 1, error=None)
        return True

    async def complete_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
    ) -> bool:
        row = self.steps.get(step_id)
        if row is None or row["status"] != "running":
            return False
        row.update(status="completed", outputs=outputs, usage=usage, error=None)
        self.checkpoints.append(checkpoint_id)
        return True

    async def record_step_error(
        self,
        execution_id: str,
        step_id: str,
        error: dict[str, Any],
        *,
        final: bool,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
    ) -> None:
        self.steps[step_id]["error"] = error
        if final:
            self.steps[step_id]["status"] = "failed"

    async def park(self, execution_id: str, step_id: str | None, task_token: str) -> str:
        if self.cancel_requested:
            return "cancel_requested"
        if not self.pause_requested:
            return "released"
        self.parked[step_id] = task_token
        return "parked"

    async def record_failure(
        self, execution_id: str, step_id: str | None, error: dict[str, Any]
    ) -> None:
        if step_id is not None and self.steps.get(step_id, {}).get("status") != "completed":
            self.steps.setdefault(step_id, {}).update(status="failed", error=error)
        if self.status in ACTIVE and self.failure is None:
            self.failure = error  # the first recorded failure is the one the end keeps

    def cancel(self) -> None:
        """What ``request_cancel`` does to the rows: flag set, running steps closed."""
        self.status, self.cancel_requested = "cancelled", True
        for row in self.steps.values():
            if row["status"] == "running":
                row["status"] = "failed"


class ScriptedLLM:
    """Answers from ``script`` (a function of the request), recording every prompt."""

    def __init__(self, script: Callable[[ChatRequest], str]) -> None:
        self.script = script
        self.prompts: list[str] = []

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        self.prompts.append(request.prompt)
        return ChatResult(self.script(request), 3, 1, request.model, 5.0)

    async def aclose(self) -> None:
        return None


@dataclass
class Tokens:
    succeeded: list[str] = field(default_factory=list)

    def send_task_success(self, token: str, output: Any = None) -> None:
        self.succeeded.append(token)

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None:
        raise AssertionError("not expected")


def _runner(store: MemoryStore, llm: ScriptedLLM, tokens: Tokens | None = None) -> StepRunner:
    def factory(
        resolver: CredentialResolver, *, timeout_seconds: float
    ) -> LLMProvider | EmbeddingProvider:
        return llm

    providers = ProviderRegistry(EnvCredentialResolver({}), factories={"openai": factory})
    return StepRunner(
        store, providers, tokens or Tokens(), clock=lambda: datetime(2025, 1, 1, tzinfo=UTC)
    )


def _chain_store(**extra: Any) -> MemoryStore:
    definition = {
        "name": "w",
        "steps": [
            _step("a", "a {{x}}", "out_a"),
            _step("b", "b {{out_a}} {{x}}", "out_b", ["a"]),
            _step("c", "c {{x}}", "out_c"),
        ],
    }
    return MemoryStore(definition_json=definition, inputs={"x": "1"}, **extra)


async def test_run_commits_outputs_usage_and_a_checkpoint() -> None:
    store = _chain_store()
    llm = ScriptedLLM(lambda request: request.prompt.upper())

    result = await _runner(store, llm).handle(
        {"action": "run", "execution_id": EXECUTION, "step_id": "a", "attempt": 0}
    )

    assert result["status"] == "completed"
    assert store.steps["a"]["outputs"] == {"out_a": "A 1"}
    assert store.steps["a"]["usage"] == StepUsage(3, 1, 5.0)
    assert len(store.checkpoints) == 1 and store.checkpoints[0].startswith("ckpt-")


async def test_completed_step_returns_its_stored_result_without_calling_the_provider() -> None:
    store = _chain_store()
    store.steps["a"] = {"status": "completed", "outputs": {"out_a": "done"}}
    llm = ScriptedLLM(lambda request: "new")

    result = await _runner(store, llm).run(EXECUTION, "a")

    assert result == {"step_id": "a", "status": "completed", "reused": True}
    assert llm.prompts == []
    assert store.steps["a"]["outputs"] == {"out_a": "done"}


async def test_templates_see_inputs_and_ancestor_outputs_only() -> None:
    store = _chain_store()
    store.steps["a"] = {"status": "completed", "outputs": {"out_a": "from a"}}
    store.steps["c"] = {"status": "completed", "outputs": {"out_c": "from c"}}
    llm = ScriptedLLM(lambda request: "ok")

    await _runner(store, llm).run(EXECUTION, "b")

    assert llm.prompts == ["b from a 1"]


async def test_document_lists_render_one_per_line() -> None:
    store = _chain_store()
    store.steps["a"] = {
        "status": "completed",
        "outputs": {"out_a": [{"text": "first"}, {"metadata": {"content": "second"}}]},
    }
    llm = ScriptedLLM(lambda request: "ok")

    await _runner(store, llm).run(EXECUTION, "b")

    assert llm.prompts == ["b first\nsecond 1"]


async def test_pause_flag_raises_workflow_paused_before_any_call() -> None:
    store = _chain_store(pause_requested=True)
    llm = ScriptedLLM(lambda request: "ok")

    with pytest.raises(WorkflowPaused):
        await _runner(store, llm).run(EXECUTION, "a")

    assert llm.prompts == [] and "a" not in store.steps


async def test_cancel_flag_raises_workflow_cancelled() -> None:
    store = _chain_store(cancel_requested=True)

    with pytest.raises(WorkflowCancelled):
        await _runner(store, ScriptedLLM(lambda request: "ok")).run(EXECUTION, "a")


async def test_a_delivery_after_the_end_calls_nothing() -> None:
    store = _chain_store(status="completed")
    llm = ScriptedLLM(lambda request: "ok")

    with pytest.raises(ExecutionEnded):
        await _runner(store, llm).run(EXECUTION, "a")

    assert llm.prompts == [] and store.steps == {} and store.checkpoints == []


async def test_a_step_completed_by_another_delivery_after_the_read_is_not_run_again() -> None:
    def other_delivery_completes(store: MemoryStore) -> None:
        store.steps["a"] = {"status": "completed", "outputs": {"out_a": "theirs"}, "attempts": 1}

    store = _chain_store(between_read_and_start=other_delivery_completes)
    llm = ScriptedLLM(lambda request: "mine")

    result = await _runner(store, llm).run(EXECUTION, "a")

    assert result == {"step_id": "a", "status": "completed", "reused": True}
    assert llm.prompts == []
    assert store.steps["a"] == {
        "status": "completed",
        "outputs": {"out_a": "theirs"},
        "attempts": 1,
    }


async def test_a_cancel_between_the_read_and_the_start_runs_nothing() -> None:
    store = _chain_store(between_read_and_start=MemoryStore.cancel)
    llm = ScriptedLLM(lambda request: "ok")

    with pytest.raises(WorkflowCancelled):
        await _runner(store, llm).run(EXECUTION, "a")

    assert llm.prompts == [] and "a" not in store.steps and store.checkpoints == []


async def test_an_end_between_the_read_and_the_start_runs_nothing() -> None:
    def times_out(store: MemoryStore) -> None:
        store.status = "timed_out"

    store = _chain_store(between_read_and_start=times_out)
    llm = ScriptedLLM(lambda request: "ok")

    with pytest.raises(ExecutionEnded):
        await _runner(store, llm).run(EXECUTION, "a")

    assert llm.prompts == [] and "a" not in store.steps


async def test_an_attempt_cancelled_while_the_provider_answered_commits_nothing() -> None:
    store = _chain_store()

    def answer_after_a_cancel(request: ChatRequest) -> str:
        store.cancel()  # the cancel lands while the provider is still answering
        return "too late"

    result = await _runner(store, ScriptedLLM(answer_after_a_cancel)).run(EXECUTION, "a")

    assert result == {"step_id": "a", "status": "completed", "reused": True}
    assert store.steps["a"]["status"] == "failed" and "outputs" not in store.steps["a"]
    assert store.checkpoints == []


async def test_a_duplicate_delivery_that_loses_the_race_keeps_the_winners_outputs() -> None:
    store = _chain_store()

    def winner_commits_first(request: ChatRequest) -> str:
        store.steps["a"].update(status="completed", outputs={"out_a": "winner"})
        store.checkpoints.append("ckpt-winner")
        return "loser"

    result = await _runner(store, ScriptedLLM(winner_commits_first)).run(EXECUTION, "a")

    assert result == {"step_id": "a", "status": "completed", "reused": True}
    assert store.steps["a"]["outputs"] == {"out_a": "winner"}
    assert store.checkpoints == ["ckpt-winner"]


async def test_rate_limit_is_raised_for_retry_and_kept_on_the_running_step() -> None:
    def limited(request: ChatRequest) -> str:
        raise ProviderRateLimited("slow down", provider="openai", status_code=429)

    store = _chain_store()

    with pytest.raises(ProviderRateLimited):
        await _runner(store, ScriptedLLM(limited)).run(EXECUTION, "a")

    assert store.steps["a"]["status"] == "running"
    assert store.steps["a"]["error"]["type"] == "ProviderRateLimited"


async def test_auth_error_fails_the_step_permanently_with_its_message() -> None:
    def refused(request: ChatRequest) -> str:
        raise ProviderAuthError("the API key was rejected", provider="openai", status_code=401)

    store = _chain_store()

    with pytest.raises(ProviderAuthError):
        await _runner(store, ScriptedLLM(refused)).run(EXECUTION, "a")

    assert store.steps["a"]["status"] == "failed"
    assert store.steps["a"]["error"] == {
        "type": "ProviderAuthError",
        "message": "the API key was rejected",
        "step_id": "a",
    }


async def test_unconfigured_vector_database_is_a_permanent_failure() -> None:
    definition = {
        "name": "w",
        "steps": [
            {
                "id": "search",
                "type": "vector_search",
                "database": "qdrant",
                "index": "kb",
                "query": "{{q}}",
                "output": ["docs"],
            }
        ],
    }
    store = MemoryStore(definition_json=definition, inputs={"q": [0.1, 0.2]})

    with pytest.raises(StepConfigurationError, match="vector database 'qdrant' is not configured"):
        await _runner(store, ScriptedLLM(lambda request: "ok")).run(EXECUTION, "search")

    assert store.steps["search"]["status"] == "failed"


async def test_park_stores_the_token_while_paused() -> None:
    store, tokens = _chain_store(pause_requested=True), Tokens()

    result = await _runner(store, ScriptedLLM(lambda r: "ok"), tokens).park(EXECUTION, "a", "t1")

    assert result == {"parked": True}
    assert store.parked == {"a": "t1"} and tokens.succeeded == []


async def test_park_after_an_early_resume_releases_its_own_token() -> None:
    store, tokens = _chain_store(), Tokens()

    result = await _runner(store, ScriptedLLM(lambda r: "ok"), tokens).park(EXECUTION, "a", "t1")

    assert result == {"parked": False}
    assert tokens.succeeded == ["t1"]


async def test_park_of_a_cancelled_execution_raises_workflow_cancelled() -> None:
    store = _chain_store(cancel_requested=True)

    with pytest.raises(WorkflowCancelled):
        await _runner(store, ScriptedLLM(lambda r: "ok")).park(EXECUTION, None, "t1")


async def test_fail_records_a_readable_execution_error() -> None:
    store = _chain_store()
    store.steps["a"] = {"status": "running"}

    await _runner(store, ScriptedLLM(lambda r: "ok")).handle(
        {
            "action": "fail",
            "execution_id": EXECUTION,
            "step_id": "a",
            "error": {"Error": "States.Timeout", "Cause": ""},
        }
    )

    expected = {
        "type": "States.Timeout",
        "message": "the step did not finish within its timeout",
        "step_id": "a",
    }
    assert store.failure == expected
    assert store.steps["a"]["status"] == "failed"
    assert store.status == "running"  # the run's end, reported by the engine, ends it


async def test_fail_keeps_only_the_message_of_a_lambda_error_document() -> None:
    # On Step Functions the Cause of a Lambda function error is the runtime's JSON document.
    store = _chain_store()
    cause = (
        '{"errorMessage": "model gpt-9 does not exist", "errorType": "ProviderBadRequest",'
        ' "stackTrace": ["  File \\"runner.py\\", line 1"]}'
    )

    await _runner(store, ScriptedLLM(lambda r: "ok")).handle(
        {
            "action": "fail",
            "execution_id": EXECUTION,
            "step_id": None,
            "error": {"Error": "ProviderBadRequest", "Cause": cause},
        }
    )

    assert store.failure == {
        "type": "ProviderBadRequest",
        "message": "model gpt-9 does not exist",
        "step_id": None,
    }
