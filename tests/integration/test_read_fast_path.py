"""The most frequent reads (``GET /workflows``, a status read) answer plainly well-formed
requests on a fast path (``api/fast_path.py``) and leave every other request to FastAPI:
both give the same answer, byte for byte, and every refusal is FastAPI's own, in the
order its dependencies run (input check, then authentication, then the parameters)."""

from __future__ import annotations

import httpx

from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session
from tests.support import stored_execution

WORKFLOW = {
    "name": "fast-path",
    "steps": [
        {
            "id": "s",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "hi ✓",
            "output": ["o"],
        }
    ],
}


def _same(plain: httpx.Response, by_fastapi: httpx.Response) -> None:
    assert plain.status_code == by_fastapi.status_code == 200
    assert plain.content == by_fastapi.content
    for header in ("content-type", "content-length"):
        assert plain.headers[header] == by_fastapi.headers[header]


async def test_a_plain_list_and_fastapis_answer_are_the_same(
    client: httpx.AsyncClient, admin: Session
) -> None:
    for n in range(3):
        created = await client.post(
            "/workflows", headers=admin.headers, json={**WORKFLOW, "name": f"fast-{n}"}
        )
        assert created.status_code == 201, created.text

    for query in ("", "?limit=2", "?offset=1&name=FAST", "?version=1.0&limit=100", "?offset=9"):
        plain = await client.get(f"/workflows{query}", headers=admin.headers)
        # A parameter given twice is not plain: FastAPI answers (the last value wins).
        repeated = "&".join(filter(None, [query.lstrip("?"), "limit=7"]))
        limit = dict(p.split("=") for p in query.lstrip("?").split("&") if p).get("limit", "20")
        by_fastapi = await client.get(f"/workflows?{repeated}&limit={limit}", headers=admin.headers)
        _same(plain, by_fastapi)
    assert (await client.get("/workflows?name=fast-1", headers=admin.headers)).json()["total"] == 1


async def test_a_plain_status_read_and_fastapis_answer_are_the_same(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    execution_id = await stored_execution(
        server.runtime, admin.user_id, WORKFLOW, timeout_seconds=60
    )
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT workflow_id FROM executions WHERE id = %s", (execution_id,)
        )
        workflow_id = (await cur.fetchone())["workflow_id"]
    path = f"/workflows/{workflow_id}/status"

    plain = await client.get(f"{path}?executionId={execution_id}", headers=admin.headers)
    by_fastapi = await client.get(
        f"{path}?executionId=other&executionId={execution_id}", headers=admin.headers
    )

    _same(plain, by_fastapi)
    assert plain.json()["id"] == execution_id
    missing = await client.get(f"{path}?executionId=exec-missing", headers=admin.headers)
    assert missing.status_code == 404


async def test_refusals_come_in_fastapis_order(client: httpx.AsyncClient, admin: Session) -> None:
    # A value PostgreSQL cannot store: refused before authentication, on either path.
    for query in ("?name=a%00b", "?name=a%00b&limit=0"):
        refused = await client.get(f"/workflows{query}")
        assert refused.status_code == 400, refused.text
        assert refused.json()["details"]["errors"][0]["field"] == "name"
    # A parameter FastAPI would refuse: authentication first, then the parameter.
    for query in ("?limit=0", "?limit=abc", "?offset=-1", "?limit=" + "9" * 30):
        assert (await client.get(f"/workflows{query}")).status_code == 401
        refused = await client.get(f"/workflows{query}", headers=admin.headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "validation_error"
    status = "/workflows/00000000-0000-0000-0000-000000000000/status"
    assert (await client.get(f"{status}?wait=99")).status_code == 401
    for query in ("?wait=99", "", "?executionId=", "?executionId=e&wait=x"):
        refused = await client.get(f"{status}{query}", headers=admin.headers)
        assert refused.status_code == 400, refused.text
