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
from llm_orchestrator.audit.anchors import ANCHOR_LOGGER
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
    """A single serving process's start: the admin, then :func:`start_serving`."""
    generated = await ensure_admin(runtime)
    await start_serving(runtime)
    return generated


async def ensure_admin(runtime: Runtime) -> str | None:
    """The bootstrap admin exists; returns its password when it was generated just now."""
    settings = runtime.settings
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    return await runtime.user_admin.ensure_admin(
        settings.admin_username, password, email=settings.admin_email
    )


async def start_serving(runtime: Runtime) -> None:
    """What each serving process starts: it becomes a runner, resumes the executions no live
    process runs (a previous server's, a dead worker's) from their last checkpoint, and
    keeps the audit chain linked and anchored."""
    from llm_orchestrator.engine.local import LocalEngine

    await runtime.engine.recover()
    runtime.audit.start_linking()
    # With several serving processes on one database, one anchors: the first live runner.
    engine = runtime.engine
    runtime.audit.start_anchoring(
        runtime.settings.audit_anchor_interval_seconds,
        leading=engine.leads if isinstance(engine, LocalEngine) else None,
    )


# -- several serving processes (``llmo serve --workers N``) ---------------------------------

WORKER_DATABASE_URL = "LLMO__WORKER_DATABASE_URL"
"""Set by the supervising ``llmo serve`` for its workers: the database it prepared."""
WORKER_METRICS_DIR = "LLMO__WORKER_METRICS_DIR"
"""Set by the supervising ``llmo serve``: where its workers share their request counts."""
WORKER_PARENT_PID = "LLMO__WORKER_PARENT_PID"
"""Set by the supervising ``llmo serve``: its pid, which its workers must not outlive."""
WORKER_LOG_LEVEL = "LLMO__WORKER_LOG_LEVEL"
"""The logging level ``llmo serve --log-level`` set, for the workers' own logging."""
_PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent: int) -> None:
    """Have this worker stopped (SIGTERM: its graceful shutdown) the moment ``parent`` dies,
    kill -9 included: a worker left serving would have the embedded PostgreSQL stopped under
    it by the next ``llmo serve`` on the same data directory. On Linux the kernel sends the
    signal (``PR_SET_PDEATHSIG``); elsewhere :func:`watch_parent` looks every second."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


async def watch_parent(parent: int) -> None:
    import asyncio
    import os
    import signal

    while os.getppid() == parent:
        await asyncio.sleep(_PARENT_CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def prepare_workers(settings: Settings) -> tuple[str, str | None]:
    """The supervisor's part, once, before any worker starts: the database (started,
    migrated) and the admin. Returns the app's database URL and a generated admin password."""
    import asyncio

    url = prepare_database(settings)

    async def admin() -> str | None:
        runtime = build_runtime(settings, database_url=url)
        try:
            return await ensure_admin(runtime)
        finally:
            await runtime.close()

    return url, asyncio.run(admin())


CONNECTIONS_TO_SPARE = 5
"""Connections left free beside the workers' (migrations, ``llmo`` commands, psql)."""


class TooManyConnections(Exception):
    """The workers would need more database connections than the server allows."""


def check_connections(url: str, workers: int, pool_size: int) -> None:
    """Refuse ``workers`` before any starts when, at full load, their pools and leases
    would exceed what the server at ``url`` allows (else some fail under load, late and
    confusingly, with "too many clients")."""
    from llm_orchestrator.store.runners import connection_limit

    most, reserved = connection_limit(url)
    needed = workers * (pool_size + 1) + CONNECTIONS_TO_SPARE
    if needed > most - reserved:
        raise TooManyConnections(
            f"{workers} workers need up to {needed} database connections ({workers} x"
            f" (LLMO_DB_POOL_MAX_SIZE {pool_size} + 1 lease) + {CONNECTIONS_TO_SPARE} to"
            f" spare), but the server allows {most - reserved} (max_connections {most},"
            f" {reserved} reserved): use fewer workers, a smaller LLMO_DB_POOL_MAX_SIZE,"
            " or raise the server's max_connections"
        )


def apply_log_level(level: int) -> None:
    """``llmo serve --log-level`` for every logger, not only uvicorn's (at ``warning``, the
    HTTP client no longer logs a line per provider call), except the audit anchors: each
    is a signed record of the audit chain's head, written as an INFO line whatever the
    level (``audit.anchors``)."""
    logging.getLogger().setLevel(level)
    logging.getLogger(ANCHOR_LOGGER).setLevel(min(level, logging.INFO))


def worker_app() -> FastAPI:
    """The app of one worker (uvicorn's factory, in each worker process)."""
    import os
    from contextlib import asynccontextmanager
    from pathlib import Path

    from llm_orchestrator.metrics.fleet import FleetHttpMetrics

    # A spawned process: the logging ``llmo`` set up in the supervisor is not inherited.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    apply_log_level(int(os.environ.get(WORKER_LOG_LEVEL) or logging.INFO))
    parent = int(os.environ.get(WORKER_PARENT_PID) or os.getppid())
    exit_with_parent(parent)
    settings = Settings()
    server = build_local_server(settings, database_url=os.environ[WORKER_DATABASE_URL])
    fleet = FleetHttpMetrics(server.app.state.http_metrics, Path(os.environ[WORKER_METRICS_DIR]))
    server.app.state.http_metrics = fleet

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        import asyncio

        watcher = asyncio.get_running_loop().create_task(watch_parent(parent))
        try:
            await start_serving(server.runtime)
            fleet.start()
            # Every worker runs a scheduler: each tick is claimed by one conditional
            # update, so it fires once whichever worker gets there first.
            if server.runtime.triggers.fires_in_process:
                server.scheduler.start()
            yield
        finally:
            watcher.cancel()
        await server.scheduler.stop()
        await fleet.stop()
        await server.runtime.close()

    server.app.router.lifespan_context = lifespan
    return server.app


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
