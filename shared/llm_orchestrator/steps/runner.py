"""The step runner: the function every Task of a compiled state machine invokes.

Three actions, one per payload shape in ``docs/asl.md``:

- ``run``: render the step's templates from the inputs and its ancestors' outputs, call the
  provider, and write outputs, status, usage, the priced provider calls and a checkpoint in
  one transaction. Two round trips per step: one to begin it (its context, the attempt
  counted, the owner's budget and the prices its calls may need) and one to commit it;
  under the local engine, one per step of a chain, whose commit also begins the next step
  (:class:`Chain`).
  At-least-once delivery is expected: a step already completed returns its stored result and
  calls nothing. Pause and cancel flags are checked on entry (``WorkflowPaused`` /
  ``WorkflowCancelled``, which the state machine catches by name); a step of an execution
  that has ended runs nothing (``ExecutionEnded``).
- ``park``: a paused step stores its task token and waits for resume; when the pause was
  lifted before it got here, it answers its own token at once.
- ``fail``: record why the execution is failing, before the state machine's Fail state (the
  engine's report of the run's end then ends it, keeping this reason: see
  :mod:`llm_orchestrator.executions.lifecycle`).

The same code runs in the step-runner Lambda and, in-process, under the local engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol

from llm_orchestrator import ids
from llm_orchestrator.executions.errors import error_record
from llm_orchestrator.executions.status import TERMINAL, StepStatus
from llm_orchestrator.memo import IdentityCache
from llm_orchestrator.providers import (
    ChatRequest,
    EmbedRequest,
    ProviderError,
    ProviderRegistry,
)
from llm_orchestrator.steps import calls as provider_calls
from llm_orchestrator.steps.errors import (
    BudgetExhausted,
    ExecutionEnded,
    ExecutionNotFound,
    StepConfigurationError,
    WorkflowCancelled,
    WorkflowPaused,
)
from llm_orchestrator.steps.outputs import template_values, value_outputs
from llm_orchestrator.steps.vectors import (
    query_vector,
    search_filter,
    search_namespace,
    upsert_records,
)
from llm_orchestrator.store.step_runs import (
    NextStep,
    RunEnd,
    RunEnded,
    StepContext,
    StepUsage,
)
from llm_orchestrator.store.usage import CallRow
from llm_orchestrator.usage.budgets import Budgets
from llm_orchestrator.usage.ledger import CallLog, UsageRecorder, price_keys, price_table
from llm_orchestrator.vectorstores.base import VectorStore
from llm_orchestrator.workflows.models import (
    EMBEDDING_DIMENSIONS,
    AnyStep,
    EmbedStep,
    LlmStep,
    RetryPolicy,
    VectorSearchStep,
    VectorUpsertStep,
    WorkflowDefinition,
    ancestors,
)
from llm_orchestrator.workflows.templating import TemplateError, render, render_data, render_value

log = logging.getLogger(__name__)

_DEFAULT_RETRY = RetryPolicy()
"""The retry policy of a step without one (built once, not at every step)."""

DEFINITION_CACHE_SIZE = 1024
BEGIN_SHAPES_CACHED = 8192
RETRY_AFTER_MARGIN_SECONDS = 1.0
"""Left unslept of the invocation's (and the attempt's) remaining time when waiting out a
provider's Retry-After, so the step runner still returns its error before being cut off."""


class TaskTokenSender(Protocol):
    """SendTaskSuccess / SendTaskFailure: the local token registry or Step Functions."""

    def send_task_success(self, token: str, output: Any = None) -> None: ...

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None: ...


class StepStore(Protocol):
    """What the step runner reads and writes (``ExecutionRepository`` in production)."""

    async def step_context(self, execution_id: str, step_id: str) -> StepContext | None: ...

    async def begin_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        step_type: str,
        provider: str | None,
        month: date | None = None,
        price_keys: Sequence[tuple[str, str]] = (),
    ) -> tuple[StepContext | None, bool]: ...

    async def definition(self, execution_id: str) -> dict[str, Any] | None: ...

    async def start_step(
        self, execution_id: str, step_id: str, *, step_type: str, provider: str | None
    ) -> bool: ...

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
    ) -> bool: ...

    async def complete_and_begin(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
        next_step: NextStep,
        completed: Mapping[str, dict[str, Any]],
        inputs: dict[str, Any],
    ) -> tuple[bool, StepContext | None]: ...

    async def complete_and_end(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
        end: RunEnd,
    ) -> tuple[bool, RunEnded | None]: ...

    async def record_step_error(
        self,
        execution_id: str,
        step_id: str,
        error: dict[str, Any],
        *,
        final: bool,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
    ) -> None: ...

    async def park(self, execution_id: str, step_id: str | None, task_token: str) -> str: ...

    async def record_failure(
        self, execution_id: str, step_id: str | None, error: dict[str, Any]
    ) -> None: ...


class VectorStores(Protocol):
    """Database name → adapter (``VectorStoreRegistry`` in production)."""

    def store(self, name: str, /) -> VectorStore: ...


class NoVectorStores:
    """A step runner built without vector databases: every vector step fails permanently."""

    def store(self, name: str, /) -> VectorStore:
        raise StepConfigurationError(f"vector database '{name}' is not configured in this build")


class Chain:
    """One local run's chained begins (the local engine's, never the Lambda's).

    Where the state machine goes from one step's Task straight to the next one's
    (``next_steps``: step id → the step after it), the statement that completes a step also
    begins the next (:meth:`~llm_orchestrator.store.step_runs.StepRunRepository.complete_and_begin`)
    and its context waits here until the interpreter invokes that step: one round trip per
    step instead of two. A context is used once, by the step's first attempt; one that is
    never used (the run was stopped) leaves the step running in the database, as a run
    stopped just after a begin does, and goes with the run.
    """

    def __init__(
        self,
        next_steps: Mapping[str, str],
        *,
        last_steps: Collection[str] = (),
        end: Callable[[], Awaitable[RunEnd | None]] | None = None,
    ) -> None:
        """``last_steps``: the steps whose success ends the run (the state machine goes
        from their Task straight to its successful end); ``end``: the execution's end as
        the statement committing one of them writes it (None from it: the run's end is
        written on its own, as without ``end``). See :attr:`ending`."""
        self.next_steps = next_steps
        self.begun: dict[str, StepContext] = {}
        self.last_steps = last_steps
        self.end = end
        self.ending: asyncio.Future[tuple[bool, RunEnded | None]] | None = None
        """The statement that committed a last step with the execution's end, once sent.
        It is not cancelled with the step (a step timeout, a stop, the run's own timeout):
        the engine awaits it before the run's end and announces the end it wrote, or, when
        it wrote none (or failed), writes the end itself."""

    async def ended(self) -> RunEnded | None:
        """The end a last step's commit wrote, if it did (see :attr:`ending`)."""
        if self.ending is None:
            return None
        try:
            _, ended = await asyncio.shield(self.ending)
        except Exception:
            return None
        return ended


class _Definitions:
    """Parsed pinned definitions by execution id.

    Safe to cache: an execution's definition is pinned when it starts and never changes,
    so this holds nothing that PostgreSQL does not already say.
    """

    def __init__(self, repo: StepStore) -> None:
        self._repo = repo
        self._cache: OrderedDict[str, tuple[WorkflowDefinition, dict[str, frozenset[str]]]] = (
            OrderedDict()
        )
        self._parsed: IdentityCache[
            dict[str, Any], tuple[WorkflowDefinition, dict[str, frozenset[str]]]
        ] = IdentityCache(DEFINITION_CACHE_SIZE)

    async def get(self, execution_id: str) -> tuple[WorkflowDefinition, dict[str, frozenset[str]]]:
        cached = self._cache.get(execution_id)
        if cached is not None:
            self._cache.move_to_end(execution_id)
            return cached
        raw = await self._repo.definition(execution_id)
        if raw is None:
            raise ExecutionNotFound(f"execution '{execution_id}' does not exist")
        return self.remember(execution_id, raw)

    def remember(
        self, execution_id: str, raw: dict[str, Any]
    ) -> tuple[WorkflowDefinition, dict[str, frozenset[str]]]:
        # Executions of one workflow started by this process pin the very same definition
        # object (the workflow service hands it out while unchanged): parse it once.
        entry = self._parsed.get(raw, _parse)
        self._cache[execution_id] = entry
        if len(self._cache) > DEFINITION_CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Its exception is the step's (or, once the step is gone, the engine's) to see."""
    if not future.cancelled():
        future.exception()


def _parse(raw: dict[str, Any]) -> tuple[WorkflowDefinition, dict[str, frozenset[str]]]:
    definition = WorkflowDefinition.model_validate(raw)
    return definition, ancestors(definition)


class StepRunner:
    def __init__(
        self,
        repo: StepStore,
        providers: ProviderRegistry,
        tokens: TaskTokenSender,
        *,
        clock: Callable[[], datetime],
        vector_stores: VectorStores | None = None,
        wait_for_retry_after: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        usage: UsageRecorder | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        """``wait_for_retry_after``: on a retryable provider error with a Retry-After, wait
        it out before raising (capped by the time left), for engines whose Retry cannot
        honour it (Step Functions). The local engine honours it in its own Retry instead.
        ``usage`` prices and records every provider call (none recorded without it)."""
        self._usage = usage
        self._budgets = budgets
        self._wait_for_retry_after = wait_for_retry_after
        self._sleep = sleep
        self._repo = repo
        self._providers = providers
        self._tokens = tokens
        self._now = clock
        self._vectors = vector_stores or NoVectorStores()
        self._definitions = _Definitions(repo)
        self._begins: IdentityCache[
            AnyStep, tuple[str | None, bool, tuple[tuple[str, str], ...]]
        ] = IdentityCache(BEGIN_SHAPES_CACHED)

    def remember_definition(self, execution_id: str, definition: dict[str, Any]) -> None:
        """Seed the cache with an execution's pinned definition (saves its first read)."""
        self._definitions.remember(execution_id, definition)

    async def handle(
        self,
        payload: Mapping[str, Any],
        *,
        time_left: Callable[[], float] | None = None,
        chain: Chain | None = None,
    ) -> dict[str, Any]:
        """Dispatch one Task payload; raises the errors the state machine routes by name.

        ``time_left``: seconds this invocation may still run (a Lambda's remaining time).
        ``chain``: the local run's chained begins (see :class:`Chain`).
        """
        action = payload.get("action")
        execution_id = str(payload["execution_id"])
        step_id = payload.get("step_id")
        if action == "run":
            attempt = payload.get("attempt")
            return await self.run(
                execution_id,
                str(step_id),
                attempt=attempt if isinstance(attempt, int) else None,
                time_left=time_left,
                chain=chain,
            )
        if action == "park":
            return await self.park(execution_id, step_id, str(payload["task_token"]))
        if action == "fail":
            return await self.fail(execution_id, step_id, payload.get("error") or {})
        raise ValueError(f"unknown step-runner action {action!r}")

    # -- run -----------------------------------------------------------------------------

    async def run(
        self,
        execution_id: str,
        step_id: str,
        *,
        attempt: int | None = None,
        time_left: Callable[[], float] | None = None,
        chain: Chain | None = None,
    ) -> dict[str, Any]:
        """``attempt`` is ``$$.State.RetryCount`` (0 on the first call of the step)."""
        started = time.monotonic()
        definition, ancestor_map = await self._definitions.get(execution_id)
        try:
            step = definition.step(step_id)
        except KeyError:
            raise ExecutionNotFound(f"step '{step_id}' is not in the workflow") from None
        month = self._month() if isinstance(step, LlmStep | EmbedStep) else None
        begin = self._begin_of(step, month)
        begun = chain.begun.pop(step_id, None) if chain is not None else None
        context: StepContext | None
        if begun is not None and not attempt:
            # Begun by the statement that completed the step before it.
            context, began = begun, True
            if not context.outputs.keys() >= ancestor_map[step_id]:
                # Its outputs are what the run knew (see ``complete_and_begin``): should an
                # ancestor have completed elsewhere, read them as a begin would have.
                context = await self._with_stored_outputs(execution_id, step_id, context)
        else:
            # One round trip: the context to run with, the attempt counted if it may run,
            # and for a step that calls a provider, the owner's budget and the prices of
            # its calls.
            context, began = await self._repo.begin_step(
                execution_id,
                step_id,
                step_type=begin.step_type,
                provider=begin.provider,
                month=begin.month,
                price_keys=begin.price_keys,
            )
        if context is None:
            raise ExecutionNotFound(f"execution '{execution_id}' does not exist")
        if not began:
            if context.cancel_requested:
                raise WorkflowCancelled(f"execution '{execution_id}' was cancelled")
            if context.step_status == StepStatus.COMPLETED:
                return {"step_id": step_id, "status": StepStatus.COMPLETED, "reused": True}
            if context.status in TERMINAL:
                # Terminal statuses are final: a delivery arriving after the end (a Lambda
                # retry, a duplicate) must not call a provider nor write outputs or
                # checkpoints.
                raise ExecutionEnded(f"execution '{execution_id}' has already ended")
            if context.pause_requested:
                raise WorkflowPaused(f"execution '{execution_id}' is paused")
            # Completed by another delivery, or cancelled / ended, since the read.
            await self._refuse_if_stopped(execution_id, step_id)
            return {"step_id": step_id, "status": StepStatus.COMPLETED, "reused": True}
        calls = CallLog()
        recorded = False
        try:
            try:
                outputs, usage = await self._checked(
                    execution_id, step, definition, ancestor_map, context, calls, attempt
                )
            except ProviderError as exc:
                error = error_record(type(exc).__name__, exc.message, step_id)
                await self._repo.record_step_error(
                    execution_id,
                    step_id,
                    error,
                    final=not exc.retryable,
                    **self._priced(calls, context, month),
                )
                recorded = True
                await self._wait_out_retry_after(exc, step, attempt, started, time_left)
                raise
            except (TemplateError, StepConfigurationError) as exc:
                error = error_record(type(exc).__name__, str(exc), step_id)
                await self._repo.record_step_error(
                    execution_id, step_id, error, final=True, **self._priced(calls, context, month)
                )
                recorded = True
                if isinstance(exc, BudgetExhausted):
                    raise  # its own name, so the execution's error says why it stopped
                raise StepConfigurationError(str(exc)) from exc
            following = chain.next_steps.get(step_id) if chain is not None else None
            end = None
            if chain is not None and chain.end is not None and step_id in chain.last_steps:
                try:
                    end = await chain.end()
                except Exception as exc:
                    # The end could not be made ready (its audit event sealed): the step
                    # commits on its own and the engine's finish writes the end, as it
                    # does without the fold, rather than the finished step being lost.
                    log.warning(
                        "execution %s: the run's end cannot ride with its last step's"
                        " commit (%s); it is written after it",
                        execution_id,
                        type(exc).__name__,
                    )
            if end is not None:
                assert chain is not None
                # Sent as a task of its own and shielded: once sent, whether it ended the
                # execution must be known even if this step is cancelled meanwhile.
                ending = asyncio.ensure_future(
                    self._repo.complete_and_end(
                        execution_id,
                        step_id,
                        outputs=outputs,
                        usage=usage,
                        checkpoint_id=ids.checkpoint_id(),
                        **self._priced(calls, context, month),
                        end=end,
                    )
                )
                ending.add_done_callback(_retrieved)
                chain.ending = ending
                try:
                    committed, _ = await asyncio.shield(ending)
                except asyncio.CancelledError:
                    recorded = True  # the statement goes on, with the calls
                    raise
            elif following is None:
                committed = await self._repo.complete_step(
                    execution_id,
                    step_id,
                    outputs=outputs,
                    usage=usage,
                    checkpoint_id=ids.checkpoint_id(),
                    **self._priced(calls, context, month),
                )
            else:
                assert chain is not None
                committed, next_context = await self._repo.complete_and_begin(
                    execution_id,
                    step_id,
                    outputs=outputs,
                    usage=usage,
                    checkpoint_id=ids.checkpoint_id(),
                    **self._priced(calls, context, month),
                    next_step=self._begin_of(definition.step(following), self._month()),
                    completed=context.outputs,
                    inputs=context.inputs,
                )
                if next_context is not None:
                    chain.begun[following] = next_context
            recorded = True
        finally:
            if not recorded and calls.attempts and self._usage is not None:
                # Anything else interrupted the step (a cancellation, an unexpected error, a
                # failed write): the calls it made are still money spent.
                await self._record_alone(execution_id, step_id, calls)
        if not committed:
            return {"step_id": step_id, "status": StepStatus.COMPLETED, "reused": True}
        return {
            "step_id": step_id,
            "status": StepStatus.COMPLETED,
            "reused": False,
            "step_type": step.type,
            "provider": begin.provider,
            "usage": {
                "latency_ms": usage.latency_ms,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            },
        }

    def _begin_of(self, step: AnyStep, month: date | None) -> NextStep:
        """What beginning ``step`` needs; ``month`` counts only for a provider's steps."""
        provider, calls_provider, keys = self._begins.get(step, self._begin_shape)
        return NextStep(step.id, step.type, provider, month if calls_provider else None, keys)

    def _begin_shape(self, step: AnyStep) -> tuple[str | None, bool, tuple[tuple[str, str], ...]]:
        """What a step's begins always pass: its provider (or database), whether it calls a
        provider, and the price keys of its calls. Worked out once per step of a cached
        definition, not once per begin."""
        provider = (
            step.database
            if isinstance(step, VectorSearchStep | VectorUpsertStep)
            else step.provider
        )
        calls_provider = isinstance(step, LlmStep | EmbedStep)
        keys = tuple(_price_keys(step)) if calls_provider and self._usage else ()
        return provider, calls_provider, keys

    async def _record_alone(self, execution_id: str, step_id: str, calls: CallLog) -> None:
        assert self._usage is not None
        try:
            await self._usage.record(execution_id, step_id, calls)
        except Exception:
            # The step's own error (or cancellation) is what the caller must see.
            log.exception("could not record the provider calls of step %s", step_id)

    def _month(self) -> date:
        if self._budgets is not None:
            return self._budgets.month()
        return self._now().astimezone(UTC).date().replace(day=1)

    def _priced(self, calls: CallLog, context: StepContext, month: date | None) -> dict[str, Any]:
        """The ``calls``/``month`` arguments that record ``calls`` with the step's write."""
        if self._usage is None or not calls.attempts:
            return {}
        return {
            "calls": self._usage.rows(calls, price_table(context.prices)),
            "month": month or self._month(),
        }

    async def _wait_out_retry_after(
        self,
        exc: ProviderError,
        step: AnyStep,
        attempt: int | None,
        started: float,
        time_left: Callable[[], float] | None,
    ) -> None:
        """Wait for the provider's Retry-After before the Retry that follows this error.

        Step Functions' Retry knows only its own backoff, so the wait happens here, before
        raising: the next attempt then starts no sooner than the provider asked. Capped by
        what the invocation and the attempt's ``timeout_seconds`` have left, and skipped
        when no retry follows (the last attempt of the step's retry policy).
        """
        if not (self._wait_for_retry_after and exc.retryable and exc.retry_after):
            return
        policy = step.retry or _DEFAULT_RETRY
        if attempt is not None and attempt + 1 >= policy.max_attempts:
            return
        wait = exc.retry_after
        if time_left is not None:
            wait = min(wait, time_left() - RETRY_AFTER_MARGIN_SECONDS)
        if step.timeout_seconds is not None:
            elapsed = time.monotonic() - started
            wait = min(wait, step.timeout_seconds - elapsed - RETRY_AFTER_MARGIN_SECONDS)
        if wait > 0:
            await self._sleep(wait)

    async def _dimension_of(self, provider: str, model: str) -> int | None:
        """An embedding model's vector size: the known table, else an earlier call's."""
        known = EMBEDDING_DIMENSIONS.get((provider, model))
        if known is None and self._usage is not None:
            known = await self._usage.known_dimension(provider, model)
        return known

    async def _with_stored_outputs(
        self, execution_id: str, step_id: str, context: StepContext
    ) -> StepContext:
        stored = await self._repo.step_context(execution_id, step_id)
        if stored is None:
            raise ExecutionNotFound(f"execution '{execution_id}' does not exist")
        return dataclasses.replace(context, outputs=stored.outputs)

    async def _refuse_if_stopped(self, execution_id: str, step_id: str) -> None:
        context = await self._repo.step_context(execution_id, step_id)
        if context is None:
            raise ExecutionNotFound(f"execution '{execution_id}' does not exist")
        if context.step_status == StepStatus.COMPLETED:
            return
        if context.cancel_requested:
            raise WorkflowCancelled(f"execution '{execution_id}' was cancelled")
        raise ExecutionEnded(f"execution '{execution_id}' has already ended")

    async def _checked(
        self,
        execution_id: str,
        step: AnyStep,
        definition: WorkflowDefinition,
        ancestor_map: dict[str, frozenset[str]],
        context: StepContext,
        calls: CallLog,
        attempt: int | None,
    ) -> tuple[dict[str, Any], StepUsage]:
        """``_execute``, unless the owner's budget is spent.

        The budget read with the context says whether one applies. Only then does the step
        pay two more round trips, as before folding: the spend is read right before
        the call, and the calls are recorded (the spend counted) in a commit of their own
        as soon as they return, not with the step's completion. Concurrent steps of the
        owner see the spend at once, which keeps what they can overspend bounded by the
        calls in flight when the budget ran out (``usage/budgets.py``)."""
        if not (
            self._budgets is not None
            and isinstance(step, LlmStep | EmbedStep)
            and self._budgets.applies(context.budget)
        ):
            return await self._execute(step, definition, ancestor_map, context, calls, attempt)
        # The context carries the budget's setting, not its spend: read it now, right
        # before the call.
        refusal = await self._budgets.step_refusal(execution_id)
        if refusal is not None:
            raise BudgetExhausted(refusal)
        try:
            return await self._execute(step, definition, ancestor_map, context, calls, attempt)
        finally:
            if calls.attempts and self._usage is not None:
                await self._usage.record(execution_id, step.id, calls)
                calls.attempts.clear()  # recorded: nothing left for the step's own write

    async def _execute(
        self,
        step: AnyStep,
        definition: WorkflowDefinition,
        ancestor_map: dict[str, frozenset[str]],
        context: StepContext,
        calls: CallLog,
        attempt: int | None = None,
    ) -> tuple[dict[str, Any], StepUsage]:
        values = template_values(
            definition, step.id, context.inputs, context.outputs, ancestor_map[step.id]
        )
        if isinstance(step, LlmStep):
            request = ChatRequest(
                model=step.model,
                prompt=render(step.prompt, values),
                system=render(step.system, values) if step.system is not None else None,
                temperature=step.temperature,
                max_tokens=step.max_tokens,
            )
            reply = await provider_calls.llm_reply(
                self._providers, step, request, calls, last_attempt=_last_attempt(step, attempt)
            )
            usage = StepUsage(reply.input_tokens, reply.output_tokens, reply.latency_ms)
            return reply.outputs, usage
        if isinstance(step, EmbedStep):
            text = _embedding_input(step, values)
            if isinstance(text, list) and not text:
                # Nothing to embed (an ingest of zero documents): no call, no vectors.
                return value_outputs(step.output, []), StepUsage(0, None, 0.0)
            embedded = await provider_calls.embed_chain(
                self._providers,
                step,
                EmbedRequest(model=step.model, input=text, input_type=step.input_type),
                calls,
                last_attempt=_last_attempt(step, attempt),
                dimension_of=self._dimension_of,
            )
            vectors: Any = embedded.vectors if isinstance(text, list) else embedded.vectors[0]
            usage = StepUsage(embedded.input_tokens, None, embedded.latency_ms)
            return value_outputs(step.output, vectors), usage
        if isinstance(step, VectorUpsertStep):
            records = upsert_records(
                render_value(step.vectors, values), render_value(step.documents, values)
            )
            namespace = search_namespace(
                render(step.namespace, values) if step.namespace is not None else None
            )
            started = time.perf_counter()
            written = await self._vectors.store(step.database).upsert(
                step.index, records, namespace=namespace
            )
            usage = StepUsage(None, None, _elapsed_ms(started))
            return value_outputs(step.output, written), usage
        query = query_vector(render_value(step.query, values))
        filters = search_filter(
            render_data(step.filter, values) if step.filter is not None else None
        )
        namespace = search_namespace(
            render(step.namespace, values) if step.namespace is not None else None
        )
        started = time.perf_counter()
        matches = await self._vectors.store(step.database).search(
            step.index,
            query,
            top_k=step.top_k,
            filter=filters,
            namespace=namespace,
            ef_search=step.ef_search,
        )
        usage = StepUsage(None, None, _elapsed_ms(started))
        return value_outputs(step.output, [match.as_output() for match in matches]), usage

    # -- park ----------------------------------------------------------------------------

    async def park(self, execution_id: str, step_id: str | None, task_token: str) -> dict[str, Any]:
        outcome = await self._repo.park(execution_id, step_id, task_token)
        if outcome == "cancel_requested":
            raise WorkflowCancelled(f"execution '{execution_id}' was cancelled")
        if outcome == "released":
            # Resume got in before this park stored its token: release it ourselves.
            self._tokens.send_task_success(task_token, {"resumed": True})
        return {"parked": outcome == "parked"}

    # -- fail ----------------------------------------------------------------------------

    async def fail(
        self, execution_id: str, step_id: str | None, error: Mapping[str, Any]
    ) -> dict[str, Any]:
        name = str(error.get("Error") or "StepFailed")
        cause = str(error.get("Cause") or "")
        record = error_record(name, _readable_cause(name, cause), step_id)
        await self._repo.record_failure(execution_id, step_id, record)
        return {"failed": True}


def _price_keys(step: AnyStep) -> list[tuple[str, str]]:
    """The price overrides the calls of ``step`` (its primary and fallbacks) may need."""
    if isinstance(step, LlmStep):
        targets = provider_calls.llm_targets(step)
    elif isinstance(step, EmbedStep):
        targets = provider_calls.embed_targets(step)
    else:
        return []
    return price_keys((target.provider, target.model) for target in targets)


def _last_attempt(step: AnyStep, attempt: int | None) -> bool:
    """Whether no Retry follows this attempt (``attempt`` is ``$$.State.RetryCount``):
    the one in which a step's fallback chain is walked. Unknown counts as last."""
    return attempt is None or attempt + 1 >= (step.retry or _DEFAULT_RETRY).max_attempts


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _embedding_input(step: EmbedStep, values: Mapping[str, Any]) -> str | list[str]:
    """What an ``embed`` step embeds: one text, or a list of texts (one vector each).

    ``{{var}}`` naming a list embeds each item: strings as they are, documents (objects
    with a ``text``) by their text. Anything else in ``input`` is rendered as one text.
    """
    value = render_value(step.input, values)
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return render(step.input, values)
    texts: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            raise StepConfigurationError(
                f"input item {index} is {type(item).__name__}, not a string: an embed step "
                "embeds a text or a list of texts (or of documents with a 'text')"
            )
        texts.append(item)
    return texts


def _readable_cause(name: str, cause: str) -> str:
    if cause:
        return _lambda_error_message(cause)
    if name == "States.Timeout":
        return "the step did not finish within its timeout"
    return f"the step failed with {name}"


def _lambda_error_message(cause: str) -> str:
    """On AWS the Cause of a Lambda function error is the runtime's JSON error document
    (``errorMessage``, ``errorType``, ``stackTrace``); keep the message, drop the trace."""
    if not cause.startswith("{"):
        return cause
    try:
        document = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(document, dict) and isinstance(document.get("errorMessage"), str):
        return document["errorMessage"]
    return cause
