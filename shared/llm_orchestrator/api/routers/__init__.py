"""One router module per endpoint group; each Lambda mounts its own, the local server all."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter


def all_routers() -> list[APIRouter]:
    """Every group's router, in the order the API reference lists them.

    Imported here on call: a Lambda importing one group's router loads no other group's.
    """
    from llm_orchestrator.api.routers import (
        admin,
        audit,
        auth,
        executions,
        monitoring,
        state,
        triggers,
        workflows,
    )

    return [
        auth.router,
        workflows.router,
        triggers.router,
        executions.router,
        triggers.events_router,
        state.router,
        admin.router,
        audit.router,
        monitoring.router,
    ]
