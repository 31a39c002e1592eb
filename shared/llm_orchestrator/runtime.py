"""The composition root: builds the database, repositories and services from ``Settings``.

The HTTP app, the Lambda handlers, the CLI and the tests all get their collaborators from a
``Runtime``; nothing else wires objects together.

Everything is built on first use, and each builder imports what it builds: a Lambda
serving one endpoint group imports and builds only what that group's routes touch (the auth
group never loads the engine, the compiler, the step runner or a provider), and importing
this module loads nothing of ours. Configuration the runtime cannot honour is refused when
the runtime is built, not on the first request that would need it.
"""

from __future__ import annotations

import asyncio
import os
import secrets as _secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from datetime import datetime

    from llm_orchestrator.audit.trail import AuditTrail
    from llm_orchestrator.auth.passwords import Passwords
    from llm_orchestrator.auth.service import AuthService
    from llm_orchestrator.auth.users import UserService
    from llm_orchestrator.config import Settings
    from llm_orchestrator.engine.asl.timers import Timers
    from llm_orchestrator.executions.lifecycle import ExecutionLifecycle
    from llm_orchestrator.executions.ports import Engine
    from llm_orchestrator.executions.service import ExecutionService
    from llm_orchestrator.metrics.stats import SystemStatsService
    from llm_orchestrator.providers import ProviderRegistry
    from llm_orchestrator.providers.base import CredentialResolver
    from llm_orchestrator.providers.registry import ProviderFactory
    from llm_orchestrator.ratelimit.limiter import RateLimiter, TierLimits
    from llm_orchestrator.secrets import SecretsStore
    from llm_orchestrator.secrets.cache import SecretCache
    from llm_orchestrator.steps.runner import StepRunner, TaskTokenSender
    from llm_orchestrator.store.api_keys import ApiKeyRepository
    from llm_orchestrator.store.db import Database
    from llm_orchestrator.store.executions import ExecutionRepository
    from llm_orchestrator.store.idempotency import IdempotencyRepository
    from llm_orchestrator.store.metrics import MetricsRepository
    from llm_orchestrator.store.step_runs import StepRunRepository
    from llm_orchestrator.store.usage import UsageRepository
    from llm_orchestrator.store.users import UserRepository
    from llm_orchestrator.triggers.completion import CompletionPublisher
    from llm_orchestrator.triggers.service import TriggerBackend, TriggerService
    from llm_orchestrator.usage.budgets import Budgets
    from llm_orchestrator.vectorstores import VectorStoreRegistry
    from llm_orchestrator.workflows.service import WorkflowService

ENGINES = ("local", "stepfunctions")
"""``LLMO_ENGINE`` values this build can run."""
SECRETS_BACKENDS = ("db", "aws")
"""``LLMO_SECRETS_BACKEND`` values this build can serve."""


class Runtime:
    """Every collaborator of the platform, each built once, on first use.

    ``environ`` (default: the process environment) supplies provider credential fallbacks;
    ``provider_factories`` (default: every provider of this build) the provider adapters.
    ``clock`` (default: the system's UTC time) is the wall clock of every service and of
    the uptime; ``engine_timers`` and ``jitter`` are the local engine's timers and its retry
    jitter (an ``engine.asl.FakeTimers`` and a seeded or fixed ``random.Random`` make its
    timeouts and backoffs deterministic in tests).
    """

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        environ: Mapping[str, str] | None = None,
        provider_factories: Mapping[str, ProviderFactory] | None = None,
        clock: Callable[[], datetime] | None = None,
        engine_timers: Timers | None = None,
        jitter: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self._environ = os.environ if environ is None else environ
        self._provider_factories = provider_factories
        if clock is None:
            from llm_orchestrator.clock import utcnow

            clock = utcnow
        self.clock = clock
        """Wall-clock time for every service (tests pass one they can move)."""
        self._engine_timers = engine_timers
        self._jitter = jitter
        self._secret_cache: SecretCache | None = None
        """The ``db`` secrets backend's cache, once built."""
        self.started_at = clock().timestamp()
        """This process's start (epoch seconds): uptime is per instance."""

    # -- storage ---------------------------------------------------------------------------

    @cached_property
    def db(self) -> Database:
        from llm_orchestrator.store.db import Database

        return Database(
            self.database_url,
            min_size=self.settings.db_pool_min_size,
            max_size=self.settings.db_pool_max_size,
            statement_timeout=self.settings.db_statement_timeout_seconds,
            pool_timeout=self.settings.db_pool_timeout_seconds,
            connect_timeout=self.settings.db_connect_timeout_seconds,
        )

    @cached_property
    def users(self) -> UserRepository:
        from llm_orchestrator.store.users import UserRepository

        return UserRepository(self.db)

    @cached_property
    def api_keys(self) -> ApiKeyRepository:
        from llm_orchestrator.store.api_keys import ApiKeyRepository

        return ApiKeyRepository(self.db)

    @cached_property
    def metrics(self) -> MetricsRepository:
        from llm_orchestrator.store.metrics import MetricsRepository

        return MetricsRepository(self.db)

    @cached_property
    def budgets(self) -> Budgets:
        """Monthly budgets per user against the spend in ``usage``."""
        from llm_orchestrator.usage.budgets import Budgets

        return Budgets(
            self.usage,
            clock=self.clock,
            default_monthly_usd=self.settings.default_monthly_budget_usd,
        )

    @cached_property
    def usage(self) -> UsageRepository:
        """Provider calls, their cost, price overrides and spend (``store/usage.py``)."""
        from llm_orchestrator.store.usage import UsageRepository

        return UsageRepository(self.db)

    @cached_property
    def execution_store(self) -> ExecutionRepository:
        from llm_orchestrator.store.executions import ExecutionRepository

        return ExecutionRepository(self.db)

    @cached_property
    def step_run_store(self) -> StepRunRepository:
        from llm_orchestrator.store.step_runs import StepRunRepository

        return StepRunRepository(self.db)

    @cached_property
    def idempotency(self) -> IdempotencyRepository:
        from llm_orchestrator.store.idempotency import IdempotencyRepository

        return IdempotencyRepository(self.db)

    # -- every group -----------------------------------------------------------------------

    @cached_property
    def jwt_secret(self) -> str:
        """The deployment's JWT secret, read once (a file locally, Secrets Manager with an
        ARN): tokens are signed with it, and control messages between workers with a key
        derived from it."""
        return resolve_jwt_secret(self.settings)

    @cached_property
    def auth(self) -> AuthService:
        from datetime import timedelta

        from llm_orchestrator.auth.service import AuthService
        from llm_orchestrator.auth.tokens import TokenCodec
        from llm_orchestrator.store.refresh_tokens import RefreshTokenRepository

        settings = self.settings
        return AuthService(
            users=self.users,
            passwords=self.passwords,
            api_keys=self.api_keys,
            refresh_tokens=RefreshTokenRepository(self.db),
            codec=TokenCodec(self.jwt_secret, key_id=settings.jwt_key_id),
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            clock=self.clock,
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        from llm_orchestrator.ratelimit.limiter import RateLimiter
        from llm_orchestrator.store.rate_limits import RateLimitRepository

        return RateLimiter(RateLimitRepository(self.db), tier_limits(self.settings), self.clock)

    @cached_property
    def audit(self) -> AuditTrail:
        from llm_orchestrator.audit.anchors import LogAnchorStore
        from llm_orchestrator.audit.trail import AuditTrail
        from llm_orchestrator.store.audit import AuditRepository

        settings = self.settings
        # Locally the anchors also go to a file in the data dir that verify reads back; on
        # AWS the log line (CloudWatch Logs) is the anchor store.
        anchor_file = settings.data_dir / "audit-anchors.jsonl" if settings.is_local else None
        return AuditTrail(
            AuditRepository(self.db),
            self.clock,
            key_source=resolve_audit_key(settings, self.secrets),
            anchors=LogAnchorStore(anchor_file),
        )

    # -- admin -----------------------------------------------------------------------------

    @cached_property
    def user_admin(self) -> UserService:
        from llm_orchestrator.auth.users import UserService

        return UserService(self.users, self.passwords)

    @cached_property
    def passwords(self) -> Passwords:
        from llm_orchestrator.auth.passwords import Passwords

        settings = self.settings
        return Passwords(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )

    @cached_property
    def secrets(self) -> SecretsStore:
        """The secrets backend; every value it yields is registered for log redaction."""
        from functools import partial

        from llm_orchestrator.secrets.credentials import RedactingSecretsStore

        settings = self.settings
        if settings.secrets_backend == "aws":
            from llm_orchestrator.secrets.aws_store import SecretsManagerStore

            return RedactingSecretsStore(
                SecretsManagerStore(
                    prefix=settings.secrets_prefix,
                    clock=self.clock,
                    cache_size=settings.secrets_cache_size,
                    cache_seconds=settings.secrets_cache_seconds,
                )
            )
        from llm_orchestrator.secrets import DbSecretsStore
        from llm_orchestrator.secrets.cache import SecretCache
        from llm_orchestrator.store.secrets import SecretRepository

        # The key is resolved on first use, so building the store never reads or creates it.
        key = partial(resolve_secrets_key, settings)
        cache = SecretCache(
            settings.secrets_cache_size, settings.secrets_cache_seconds, time.monotonic
        )
        self._secret_cache = cache
        return RedactingSecretsStore(
            DbSecretsStore(SecretRepository(self.db), key, self.clock, cache)
        )

    @cached_property
    def system_stats(self) -> SystemStatsService:
        from llm_orchestrator.metrics.stats import SystemStatsService

        return SystemStatsService(
            self.metrics,
            self.api_keys,
            clock=self.clock,
            started_at=lambda: self.started_at,
            spend=self.usage,
        )

    # -- workflows and executions ----------------------------------------------------------

    @cached_property
    def workflows(self) -> WorkflowService:
        from functools import partial

        from llm_orchestrator.compiler import compile_workflow
        from llm_orchestrator.store.workflows import WorkflowRepository
        from llm_orchestrator.workflows.service import WorkflowService

        return WorkflowService(
            WorkflowRepository(self.db),
            compile=partial(
                compile_workflow,
                step_runner_arn=self.settings.step_runner_arn,
                vector_runner_arn=self.settings.vector_runner_arn,
            ),
            clock=self.clock,
        )

    @cached_property
    def lifecycle(self) -> ExecutionLifecycle:
        """Every status change of an execution, with its audit event; the engines, the
        routers (through the executions service) and the ``events`` Lambda use this one."""
        from llm_orchestrator.executions.lifecycle import ExecutionLifecycle

        lifecycle = ExecutionLifecycle(self.execution_store, clock=self.clock, audit=self.audit)
        # Late-bound: the publisher needs the triggers, which need the executions service,
        # which needs the engine, which needs this lifecycle.
        lifecycle.on_ended = lambda record, live: self.completion.publish(record, live)
        lifecycle.live_triggers_at_end = lambda: self.completion.reads_live_triggers
        return lifecycle

    @cached_property
    def engine(self) -> Engine:
        if self.settings.engine == "stepfunctions":
            from llm_orchestrator.engine.stepfunctions import StepFunctionsEngine

            return StepFunctionsEngine(
                self.execution_store, self.lifecycle, role_arn=self.settings.states_role_arn
            )
        from llm_orchestrator.engine.asl import TaskTokenRegistry
        from llm_orchestrator.engine.local import LocalEngine
        from llm_orchestrator.engine.ownership import Ownership
        from llm_orchestrator.store.runners import ControlSigner, RunnerLease, RunnerRepository

        tokens = TaskTokenRegistry()
        store = self.execution_store

        def stamp(runner_id: int | None) -> None:
            store.runner_id = runner_id

        # Several serving processes (``llmo serve --workers``) share the database: each
        # runs the executions it owns, and takes over those of dead ones.
        # Control messages are signed with a key of this deployment's (from its JWT
        # secret): any database role may NOTIFY, none may forge or garble a request.
        signer = ControlSigner(self.jwt_secret)
        ownership = Ownership(
            RunnerRepository(self.db, signer),
            lambda: RunnerLease.acquire(
                self.database_url,
                signer=signer,
                connect_timeout=self.settings.db_connect_timeout_seconds,
            ),
            stamp=stamp,
            check_seconds=self.settings.runner_check_seconds,
        )
        ownership.on_secret_written = self._forget_secret
        ownership.on_lease_change = self._forget_secrets
        return LocalEngine(
            store,
            self.lifecycle,
            self.step_runner(tokens),
            tokens,
            timers=self._engine_timers,
            rng=self._jitter,
            ownership=ownership,
        )

    def _forget_secrets(self) -> None:
        """This process may have missed notices of secrets written (it was between leases)."""
        if self._secret_cache is not None:
            self._secret_cache.clear()

    def _forget_secret(self, name: str) -> None:
        """Another process wrote ``name``: this one must not serve its cached value."""
        if self._secret_cache is not None:
            self._secret_cache.drop(name)

    @cached_property
    def executions(self) -> ExecutionService:
        from llm_orchestrator.executions.service import ExecutionService
        from llm_orchestrator.store.checkpoints import CheckpointRepository

        return ExecutionService(
            self.execution_store,
            self.step_run_store,
            CheckpointRepository(self.db),
            self.workflows,
            self.engine,
            self.lifecycle,
            step_runner_arn=self.settings.step_runner_arn,
            vector_runner_arn=self.settings.vector_runner_arn,
            clock=self.clock,
        )

    # -- triggers --------------------------------------------------------------------------

    @cached_property
    def trigger_backend(self) -> TriggerBackend:
        """With Step Functions, EventBridge fires triggers; locally this process does."""
        settings = self.settings
        if settings.engine == "stepfunctions":
            from llm_orchestrator.triggers.eventbridge import (
                EventBridgeSettings,
                EventBridgeTriggers,
            )

            return EventBridgeTriggers(
                EventBridgeSettings(
                    events_function_arn=settings.events_function_arn,
                    scheduler_role_arn=settings.scheduler_role_arn,
                    schedule_group=settings.schedule_group,
                    event_bus=settings.event_bus,
                )
            )
        from llm_orchestrator.triggers.service import InProcessTriggers

        return InProcessTriggers()

    @cached_property
    def triggers(self) -> TriggerService:
        from llm_orchestrator.store.triggers import TriggerRepository
        from llm_orchestrator.triggers.service import TriggerService

        return TriggerService(
            TriggerRepository(self.db),
            self.workflows,
            self.users,
            self.executions,
            backend=self.trigger_backend,
            audit=self.audit,
            clock=self.clock,
            budgets=self.budgets,
        )

    @cached_property
    def completion(self) -> CompletionPublisher:
        """Completion events: logged and matched locally, put on the EventBridge bus on AWS."""
        if self.settings.engine == "stepfunctions":
            from llm_orchestrator.triggers.completion import EventBridgeCompletionEvents

            return EventBridgeCompletionEvents(self.settings.event_bus)
        from llm_orchestrator.triggers.completion import LocalCompletionEvents

        return LocalCompletionEvents(self.triggers, self.clock)

    # -- the step runner -------------------------------------------------------------------

    @cached_property
    def credentials(self) -> CredentialResolver:
        """Provider credentials: the secrets store first, then the environment, field by field.
        Whatever is resolved is registered for redaction from logs, errors and stored state."""
        from llm_orchestrator.providers.base import (
            EnvCredentialResolver,
            FallbackCredentialResolver,
        )
        from llm_orchestrator.secrets import SecretsCredentialResolver
        from llm_orchestrator.secrets.credentials import RedactingCredentialResolver

        return RedactingCredentialResolver(
            FallbackCredentialResolver(
                SecretsCredentialResolver(self.secrets), EnvCredentialResolver(self._environ)
            )
        )

    @cached_property
    def providers(self) -> ProviderRegistry:
        from llm_orchestrator.providers import ProviderRegistry

        return ProviderRegistry(self.credentials, factories=self._provider_factories)

    @cached_property
    def vector_stores(self) -> VectorStoreRegistry:
        """Vector databases; settings resolve like provider credentials (secret, then env)."""
        from llm_orchestrator.secrets import SecretsSettingResolver
        from llm_orchestrator.secrets.credentials import RedactingSettingResolver
        from llm_orchestrator.vectorstores import (
            EnvSettingResolver,
            FallbackSettingResolver,
            VectorStoreRegistry,
        )

        settings = RedactingSettingResolver(
            FallbackSettingResolver(
                SecretsSettingResolver(self.secrets), EnvSettingResolver(self._environ)
            )
        )
        return VectorStoreRegistry(settings, own_database=self.db)

    def step_runner(
        self,
        tokens: TaskTokenSender,
        *,
        wait_for_retry_after: bool = False,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> StepRunner:
        """The step runner answering parked tasks through ``tokens``: the local engine's
        registry in-process, Step Functions in the step-runner Lambda (which also waits out
        a provider's Retry-After itself: ``wait_for_retry_after``, sleeping with ``sleep``)."""
        from llm_orchestrator.steps.runner import StepRunner
        from llm_orchestrator.usage.ledger import UsageRecorder

        return StepRunner(
            self.step_run_store,
            self.providers,
            tokens,
            clock=self.clock,
            vector_stores=self.vector_stores,
            wait_for_retry_after=wait_for_retry_after,
            sleep=sleep or asyncio.sleep,
            usage=UsageRecorder(self.usage, clock=self.clock),
            budgets=self.budgets,
        )

    # -- shutdown --------------------------------------------------------------------------

    def _built(self, name: str) -> bool:
        return name in self.__dict__

    async def close(self) -> None:
        """Release what was built; what never was is not built now."""
        # The engine first: its runs stop without recording anything and are recovered on
        # the next start.
        if self._built("engine"):
            await self.engine.close()
        if self._built("providers"):
            await self.providers.aclose()
        if self._built("vector_stores"):
            await self.vector_stores.aclose()
        if self._built("audit"):
            await self.audit.close()  # a last anchor of the chain's head
        if self._built("db"):
            await self.db.close()


def build_runtime(
    settings: Settings,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    provider_factories: Mapping[str, ProviderFactory] | None = None,
    clock: Callable[[], datetime] | None = None,
    engine_timers: Timers | None = None,
    jitter: random.Random | None = None,
    serves_http: bool = True,
) -> Runtime:
    """A runtime for ``settings``; refuses at once a configuration it cannot honour.

    ``serves_http``: False for the functions that answer no HTTP request (the runners, the
    events and migrate functions). They never sign or verify a token, so on AWS they are
    given no JWT signing key and need none.

    ``environ``, ``provider_factories``, ``clock``, ``engine_timers``, ``jitter``: see
    :class:`Runtime`.
    """
    if settings.engine not in ENGINES:
        # Refused rather than silently running locally: an operator who asked for Step
        # Functions must not get in-process runs that die with the Lambda container.
        raise RuntimeError(
            f"LLMO_ENGINE={settings.engine!r} is not available in this build; use 'local'"
        )
    if (
        serves_http
        and settings.jwt_secret is None
        and not settings.jwt_secret_arn
        and not settings.is_local
    ):
        resolve_jwt_secret(settings)  # raises: every HTTP route needs it, so say so now
    if settings.secrets_backend not in SECRETS_BACKENDS:
        raise RuntimeError(
            f"LLMO_SECRETS_BACKEND={settings.secrets_backend!r} is not available in this build"
        )
    from llm_orchestrator.redaction import install_log_redaction

    install_log_redaction()
    return Runtime(
        settings,
        database_url or resolve_database_url(settings),
        environ=environ,
        provider_factories=provider_factories,
        clock=clock,
        engine_timers=engine_timers,
        jitter=jitter,
    )


@dataclass(frozen=True)
class DatabaseUrls:
    app: str
    """What the app connects with (locally: the least-privilege ``llmo_app`` role)."""
    migrate: str
    """The owner's: migrations and grants."""
    embedded: bool = False


def resolve_database_urls(settings: Settings) -> DatabaseUrls:
    if settings.database_url:
        return DatabaseUrls(
            settings.database_url, settings.migration_database_url or settings.database_url
        )
    if settings.database_secret_arn:
        from llm_orchestrator.secrets.deployment import database_url_from_secret

        url = database_url_from_secret(settings.database_secret_arn, host=settings.database_host)
        return DatabaseUrls(url, settings.migration_database_url or url)
    if not settings.is_local:
        raise RuntimeError("LLMO_DATABASE_URL is required outside the local environment")
    from llm_orchestrator.store.embedded import start_embedded_postgres
    from llm_orchestrator.store.roles import app_url

    owner = start_embedded_postgres(
        settings.data_dir, shared_buffers=settings.embedded_shared_buffers
    )
    return DatabaseUrls(app_url(owner), owner, embedded=True)


def resolve_database_url(settings: Settings) -> str:
    return resolve_database_urls(settings).app


AUDIT_KEY_SECRET = "AUDIT_HMAC_KEY"


def resolve_audit_key(settings: Settings, store: SecretsStore) -> Callable[[], Awaitable[bytes]]:
    """The audit HMAC key, from configuration, locally a file generated once into the data dir,
    on AWS the secrets backend: never the database, whose credentials it must not follow."""

    async def source() -> bytes:
        if settings.audit_hmac_key is not None:
            key = settings.audit_hmac_key.get_secret_value().encode()
        elif settings.is_local:
            key = _read_or_create_secret_file(settings.data_dir / "audit-hmac.key").encode()
        elif settings.secrets_backend == "aws":
            key = (await store.get(AUDIT_KEY_SECRET) or "").encode()
        else:
            key = b""
        if len(key) < 32:
            raise RuntimeError(
                "the audit HMAC key must be at least 32 bytes: set LLMO_AUDIT_HMAC_KEY (or, on"
                f" AWS, the {AUDIT_KEY_SECRET} secret)"
            )
        return key

    return source


def resolve_jwt_secret(settings: Settings) -> str:
    """The configured secret, or locally one generated once and kept in the data dir.

    Never a per-process random key: every process (and every Lambda container) must verify
    the tokens the others signed.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_secret_arn:
        from llm_orchestrator.secrets.deployment import read_secret_string

        return read_secret_string(settings.jwt_secret_arn)
    if not settings.is_local:
        raise RuntimeError("LLMO_JWT_SECRET is required outside the local environment")
    return _read_or_create_secret_file(settings.data_dir / "jwt-secret")


def resolve_secrets_key(settings: Settings) -> bytes:
    """Key of the ``db`` secrets backend: ``LLMO_SECRETS_KEY``, or locally one generated once
    into the data dir. Like the JWT secret, never per process: every process and container
    must decrypt what the others stored."""
    from llm_orchestrator.secrets import SecretsKeyError, generate_key, parse_key

    if settings.secrets_key is not None:
        return parse_key(settings.secrets_key.get_secret_value())
    if settings.secrets_key_arn:
        from llm_orchestrator.secrets.deployment import read_secret_string

        return parse_key(read_secret_string(settings.secrets_key_arn))
    if not settings.is_local:
        raise SecretsKeyError("LLMO_SECRETS_KEY is required outside the local environment")
    return parse_key(_read_or_create_secret_file(settings.data_dir / "secrets.key", generate_key))


def _read_or_create_secret_file(path: Path, generate: Callable[[], str] | None = None) -> str:
    """The secret kept in ``path``, created on first use.

    Several processes may get here at once (``llmo serve --workers`` starts them together):
    the value is written and synced to a file of this process's own first, then linked to
    ``path``, which fails if another process got there first. So ``path`` never exists
    half-written, and every process ends up with the one value that won.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        value = generate() if generate is not None else _secrets.token_urlsafe(48)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{_secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(draft, path)
            return value
        except FileExistsError:
            pass  # another process linked its value first: use that one
        finally:
            draft.unlink(missing_ok=True)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise RuntimeError(
            f"{path.name} in the data directory is empty: delete it to make a new one"
        )
    return value


def tier_limits(settings: Settings) -> dict[str, TierLimits]:
    from llm_orchestrator.ratelimit.limiter import DEFAULT_TIERS, TierLimits

    tiers = dict(DEFAULT_TIERS)
    tiers["enterprise"] = TierLimits(
        settings.rate_limit_enterprise_per_minute,
        settings.rate_limit_enterprise_per_hour,
        settings.rate_limit_enterprise_per_day,
    )
    return tiers
