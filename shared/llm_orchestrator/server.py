"""The local server: every endpoint group in one process, on the configured or embedded
PostgreSQL, with migrations applied and the bootstrap admin in place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from llm_orchestrator.api.app import create_app, fixed_runtime
from llm_orchestrator.api.routers import all_routers
from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import Runtime, build_runtime, resolve_database_urls
from llm_orchestrator.store.migrate import apply_migrations
from llm_orchestrator.triggers.scheduler import LocalScheduler

log = logging.getLogger(__name__)


@dataclass
class LocalServer:
    app: FastAPI
    runtime: Runtime
    database_url: str
    scheduler: LocalScheduler
    generated_admin_password: str | None = None


def prepare_database(settings: Settings) -> str:
    """Migrate as the owner; return the URL the app connects with (least privilege)."""
    urls = resolve_database_urls(settings)
    applied = apply_migrations(urls.migrate)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    if urls.embedded:
        from llm_orchestrator.store.roles import allow_app_login

        allow_app_login(urls.migrate)
    return urls.app


async def bootstrap(runtime: Runtime) -> str | None:
    settings = runtime.settings
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    generated = await runtime.user_admin.ensure_admin(
        settings.admin_username, password, email=settings.admin_email
    )
    # Crash recovery: executions a previous process left unfinished continue from their
    # last checkpoint, on this process's event loop.
    await runtime.engine.recover()
    runtime.audit.start_linking()
    runtime.audit.start_anchoring(settings.audit_anchor_interval_seconds)
    return generated


def build_local_server(
    settings: Settings,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    **runtime_options: Any,
) -> LocalServer:
    """``environ``: provider credentials and endpoints; the process environment when None.
    ``runtime_options``: the clocks and jitter source of :class:`Runtime` (tests)."""
    url = database_url or prepare_database(settings)
    runtime = build_runtime(settings, database_url=url, environ=environ, **runtime_options)
    app = create_app(all_routers(), fixed_runtime(runtime))
    scheduler = LocalScheduler(runtime.triggers, clock=utcnow)
    return LocalServer(app=app, runtime=runtime, database_url=url, scheduler=scheduler)
