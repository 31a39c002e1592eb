"""The composition root: builds the database, repositories and services from ``Settings``.

The HTTP app, the Lambda handlers, the CLI and the tests all get their collaborators from a
``Runtime``; nothing else wires objects together.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from llm_orchestrator.audit.anchors import LogAnchorStore
from llm_orchestrator.audit.trail import AuditTrail
from llm_orchestrator.auth.service import AuthService
from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.auth.users import UserService
from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.engine.base import Engine
from llm_orchestrator.engine.local import LocalEngine
from llm_orchestrator.engine.service import ExecutionService
from llm_orchestrator.providers import ProviderRegistry
from llm_orchestrator.providers.base import (
    CredentialResolver,
    EnvCredentialResolver,
    FallbackCredentialResolver,
)
from llm_orchestrator.ratelimit.limiter import DEFAULT_TIERS, RateLimiter, TierLimits
from llm_orchestrator.redaction import install_log_redaction
from llm_orchestrator.secrets import (
    DbSecretsStore,
    SecretsCredentialResolver,
    SecretsKeyError,
    SecretsSettingResolver,
    SecretsStore,
    generate_key,
    parse_key,
)
from llm_orchestrator.secrets.credentials import (
    RedactingCredentialResolver,
    RedactingSecretsStore,
    RedactingSettingResolver,
)
from llm_orchestrator.store.api_keys import ApiKeyRepository
from llm_orchestrator.store.audit import AuditRepository
from llm_orchestrator.store.checkpoints import CheckpointRepository
from llm_orchestrator.store.db import Database
from llm_orchestrator.store.executions import ExecutionRepository
from llm_orchestrator.store.metrics import MetricsRepository
from llm_orchestrator.store.rate_limits import RateLimitRepository
from llm_orchestrator.store.refresh_tokens import RefreshTokenRepository
from llm_orchestrator.store.secrets import SecretRepository
from llm_orchestrator.store.triggers import TriggerRepository
from llm_orchestrator.store.users import UserRepository
from llm_orchestrator.store.workflows import WorkflowRepository
from llm_orchestrator.triggers.completion import (
    CompletionPublisher,
    EventBridgeCompletionEvents,
    LocalCompletionEvents,
)
from llm_orchestrator.triggers.service import InProcessTriggers, TriggerBackend, TriggerService
from llm_orchestrator.vectorstores import (
    EnvSettingResolver,
    FallbackSettingResolver,
    VectorStoreRegistry,
)
from llm_orchestrator.workflows.service import WorkflowService


@dataclass
class Runtime:
    settings: Settings
    db: Database
    users: UserRepository
    api_keys: ApiKeyRepository
    auth: AuthService
    user_admin: UserService
    limiter: RateLimiter
    audit: AuditTrail
    workflows: WorkflowService
    secrets: SecretsStore
    credentials: CredentialResolver
    """Provider credentials: the secrets store first, then the environment, field by field."""
    metrics: MetricsRepository
    providers: ProviderRegistry
    vector_stores: VectorStoreRegistry
    """Vector databases; settings resolve like provider credentials (secret, then env)."""
    engine: Engine
    executions: ExecutionService
    triggers: TriggerService
    completion: CompletionPublisher
    """Completion events: logged and matched locally, put on the EventBridge bus on AWS."""
    started_at: float = field(default_factory=time.time)

    async def close(self) -> None:
        # Runs first: they stop without recording anything and are recovered on next start.
        await self.engine.close()
        await self.providers.aclose()
        await self.vector_stores.aclose()
        await self.audit.close()  # a last anchor of the chain's head
        await self.db.close()


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

    owner = start_embedded_postgres(settings.data_dir)
    return DatabaseUrls(app_url(owner), owner, embedded=True)


def resolve_database_url(settings: Settings) -> str:
    return resolve_database_urls(settings).app


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


def build_audit_trail(settings: Settings, db: Database, store: SecretsStore) -> AuditTrail:
    # Locally the anchors also go to a file in the data dir that verify reads back; on AWS
    # the log line (CloudWatch Logs) is the anchor store.
    anchor_file = settings.data_dir / "audit-anchors.jsonl" if settings.is_local else None
    return AuditTrail(
        AuditRepository(db),
        utcnow,
        key_source=resolve_audit_key(settings, store),
        anchors=LogAnchorStore(anchor_file),
    )


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
    if settings.secrets_key is not None:
        return parse_key(settings.secrets_key.get_secret_value())
    if settings.secrets_key_arn:
        from llm_orchestrator.secrets.deployment import read_secret_string

        return parse_key(read_secret_string(settings.secrets_key_arn))
    if not settings.is_local:
        raise SecretsKeyError("LLMO_SECRETS_KEY is required outside the local environment")
    return parse_key(_read_or_create_secret_file(settings.data_dir / "secrets.key", generate_key))


AUDIT_KEY_SECRET = "AUDIT_HMAC_KEY"


def build_engine(
    settings: Settings,
    executions: ExecutionRepository,
    providers: ProviderRegistry,
    audit: AuditTrail,
    vector_stores: VectorStoreRegistry | None = None,
) -> Engine:
    if settings.engine == "stepfunctions":
        from llm_orchestrator.engine.stepfunctions import StepFunctionsEngine

        return StepFunctionsEngine(
            executions, role_arn=settings.states_role_arn, now=utcnow, audit=audit
        )
    return LocalEngine(executions, providers, now=utcnow, audit=audit, vector_stores=vector_stores)


def build_secrets_store(settings: Settings, db: Database) -> SecretsStore:
    if settings.secrets_backend == "aws":
        from llm_orchestrator.secrets.aws_store import SecretsManagerStore

        return RedactingSecretsStore(
            SecretsManagerStore(
                prefix=settings.secrets_prefix,
                clock=utcnow,
                cache_size=settings.secrets_cache_size,
                cache_seconds=settings.secrets_cache_seconds,
            )
        )
    # The key is resolved on first use, so building a runtime never reads or creates it.
    return RedactingSecretsStore(
        DbSecretsStore(SecretRepository(db), partial(resolve_secrets_key, settings), utcnow)
    )


def build_trigger_backend(settings: Settings) -> TriggerBackend:
    """With Step Functions, EventBridge fires triggers; locally this process does."""
    if settings.engine == "stepfunctions":
        from llm_orchestrator.triggers.eventbridge import EventBridgeSettings, EventBridgeTriggers

        return EventBridgeTriggers(
            EventBridgeSettings(
                events_function_arn=settings.events_function_arn,
                scheduler_role_arn=settings.scheduler_role_arn,
                schedule_group=settings.schedule_group,
                event_bus=settings.event_bus,
            )
        )
    return InProcessTriggers()


def build_completion_events(settings: Settings, triggers: TriggerService) -> CompletionPublisher:
    if settings.engine == "stepfunctions":
        return EventBridgeCompletionEvents(settings.event_bus)
    return LocalCompletionEvents(triggers, utcnow)


def build_credentials(store: SecretsStore, environ: Mapping[str, str]) -> CredentialResolver:
    """A secret stored under a provider variable's name wins over that variable. Whatever
    is resolved is registered for redaction from logs, errors and stored state."""
    return RedactingCredentialResolver(
        FallbackCredentialResolver(SecretsCredentialResolver(store), EnvCredentialResolver(environ))
    )


def _read_or_create_secret_file(path: Path, generate: Callable[[], str] | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        value = generate() if generate is not None else secrets.token_urlsafe(48)
        handle.write(value)
    return value


def build_runtime(
    settings: Settings,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Runtime:
    """``environ`` (default: the process environment) supplies provider credential fallbacks."""
    install_log_redaction()
    db = Database(
        database_url or resolve_database_url(settings),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        statement_timeout=settings.db_statement_timeout_seconds,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    users = UserRepository(db)
    api_keys = ApiKeyRepository(db)
    auth = AuthService(
        users=users,
        api_keys=api_keys,
        refresh_tokens=RefreshTokenRepository(db),
        codec=TokenCodec(resolve_jwt_secret(settings), key_id=settings.jwt_key_id),
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        clock=utcnow,
    )
    secrets_store = build_secrets_store(settings, db)
    environ = os.environ if environ is None else environ
    credentials = build_credentials(secrets_store, environ)
    vector_stores = VectorStoreRegistry(
        RedactingSettingResolver(
            FallbackSettingResolver(
                SecretsSettingResolver(secrets_store), EnvSettingResolver(environ)
            )
        ),
        own_database=db,
    )
    workflows = WorkflowService(
        WorkflowRepository(db), step_runner_arn=settings.step_runner_arn, clock=utcnow
    )
    audit = build_audit_trail(settings, db, secrets_store)
    providers = ProviderRegistry(credentials)
    executions = ExecutionRepository(db)
    engine = build_engine(settings, executions, providers, audit, vector_stores)
    execution_service = ExecutionService(
        executions,
        CheckpointRepository(db),
        workflows,
        engine,
        step_runner_arn=settings.step_runner_arn,
        clock=utcnow,
    )
    triggers = TriggerService(
        TriggerRepository(db),
        workflows,
        users,
        execution_service,
        backend=build_trigger_backend(settings),
        audit=audit,
        clock=utcnow,
    )
    completion = build_completion_events(settings, triggers)
    engine.on_ended = completion.publish
    return Runtime(
        settings=settings,
        db=db,
        users=users,
        api_keys=api_keys,
        auth=auth,
        user_admin=UserService(users),
        limiter=RateLimiter(RateLimitRepository(db), tier_limits(settings), utcnow),
        audit=audit,
        secrets=secrets_store,
        credentials=credentials,
        metrics=MetricsRepository(db),
        workflows=workflows,
        providers=providers,
        vector_stores=vector_stores,
        engine=engine,
        executions=execution_service,
        triggers=triggers,
        completion=completion,
    )


def tier_limits(settings: Settings) -> dict[str, TierLimits]:
    tiers = dict(DEFAULT_TIERS)
    tiers["enterprise"] = TierLimits(
        settings.rate_limit_enterprise_per_minute,
        settings.rate_limit_enterprise_per_hour,
        settings.rate_limit_enterprise_per_day,
    )
    return tiers
