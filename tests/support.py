"""Small helpers several test modules share."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_orchestrator.auth.principal import Principal
    from llm_orchestrator.runtime import Runtime


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FakeLambdaContext:
    """What Powertools reads from a Lambda context object."""

    function_name: str = "llmo-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:llmo-test"
    aws_request_id: str = "lambda-request-1"


async def admin_principal(runtime: Runtime, username: str, password: str) -> Principal:
    """The principal of an admin (created first if need be), for driving the services
    without HTTP."""
    from llm_orchestrator.auth.permissions import ROLE_PERMISSIONS
    from llm_orchestrator.auth.principal import Principal

    await runtime.user_admin.ensure_admin(username, password)
    user = await runtime.users.get_by_username(username)
    assert user is not None
    return Principal(
        user_id=user.id,
        username=user.username,
        roles=("admin",),
        tier="enterprise",
        permissions=ROLE_PERMISSIONS["admin"],
        via="jwt",
    )


async def stored_execution(
    runtime: Runtime, owner_id: str, definition: dict[str, Any], *, timeout_seconds: int
) -> str:
    """A workflow and a pending execution of it (inputs ``{"x": "there"}``), written straight
    to the store, as the API leaves them for an engine to pick up; its id."""
    import uuid

    import psycopg

    from llm_orchestrator.clock import utcnow
    from llm_orchestrator.store.executions import ExecutionRepository

    workflow_id = uuid.uuid4()
    async with runtime.db.connection() as conn:
        await conn.execute(
            "INSERT INTO workflows (id, owner_id, name, version, definition, timeout_seconds)"
            " VALUES (%s, %s, 'w', '1.0', %s, %s)",
            (workflow_id, owner_id, psycopg.types.json.Jsonb(definition), timeout_seconds),
        )
    record = await ExecutionRepository(runtime.db).create(
        execution_id=f"exec-{uuid.uuid4()}",
        workflow_id=workflow_id,
        owner_id=owner_id,
        inputs={"x": "there"},
        definition=definition,
        state_machine={},
        timeout_seconds=timeout_seconds,
        now=utcnow(),
    )
    return record.id
