"""The behaviours every vector database must show, through the API and the official SDK
against the database's fake. A database's test module provides the ``vector_db`` fixture
(and a ``server`` fixture whose environment points at its fake) and imports these tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from llm_orchestrator.steps.vectors import document_id
from tests.fakes.base import FakeServer, RecordedRequest
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    create_workflow,
    prompts,
    start_execution,
    wait_for,
)
from tests.integration.rag_support import DOCUMENTS, ingest, ingest_steps, run_rag
from tests.support import free_port

WRONG_KEY = "wrong-key-value-that-must-never-leak-0123456789"


@dataclass
class VectorDb:
    database: str
    index: str
    label: str
    fake: FakeServer
    environ: dict[str, str]
    url_setting: str
    key_setting: str
    is_data_call: Callable[[RecordedRequest], bool]
    unreachable_url: Callable[[int], str]

    def data_calls(self) -> list[RecordedRequest]:
        return [r for r in self.fake.requests if self.is_data_call(r)]


async def put_secret(client: httpx.AsyncClient, admin: Session, key: str, value: str) -> None:
    response = await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": key, "value": value}
    )
    assert response.status_code in (200, 201), response.text


async def test_rag_answers_from_the_nearest_document(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    ingested = await ingest(client, admin, vector_db.database, vector_db.index, DOCUMENTS)
    assert ingested["status"] == "completed", ingested
    ids = ingested["steps"]["store_docs"]["outputs"]["ids"]
    assert ids == [document_id(text) for text in DOCUMENTS]

    final = await run_rag(client, admin, vector_db.database, vector_db.index, DOCUMENTS[1])

    assert final["status"] == "completed", final
    matches = final["steps"]["search_docs"]["outputs"]["relevant_docs"]
    assert [m["id"] for m in matches][0] == ids[1]
    assert sorted(m["id"] for m in matches) == sorted(ids)
    assert matches[0]["text"] == DOCUMENTS[1]
    assert matches[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    assert all(set(m) == {"id", "score", "text", "metadata"} for m in matches)
    context = prompts(fake_openai)[-1].split("Context:\n", 1)[1].split("\n\nQuestion:")[0]
    assert context.splitlines()[0] == DOCUMENTS[1]
    assert sorted(context.splitlines()) == sorted(DOCUMENTS)


async def test_filter_and_namespace_narrow_the_search(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    documents = [
        {"id": "en-1", "text": DOCUMENTS[0], "metadata": {"lang": "en", "year": 2024}},
        {"id": "fr-1", "text": DOCUMENTS[1], "metadata": {"lang": "fr", "year": 2024}},
        {"id": "en-2", "text": DOCUMENTS[2], "metadata": {"lang": "en", "year": 2023}},
    ]
    steps = ingest_steps(vector_db.database, vector_db.index, namespace="{{tenant}}")
    steps[0]["input"] = "{{texts}}"
    workflow_id = await create_workflow(client, admin, steps)
    inputs = {"documents": documents, "texts": [d["text"] for d in documents], "tenant": "acme"}
    execution_id = await start_execution(client, admin, workflow_id, inputs)
    done = await wait_for(client, admin, workflow_id, execution_id, timeout=60.0)
    assert done["status"] == "completed", done
    assert done["steps"]["store_docs"]["outputs"]["ids"] == ["en-1", "fr-1", "en-2"]

    async def search(**fields: Any) -> list[dict[str, Any]]:
        find = {
            "id": "find",
            "type": "vector_search",
            "database": vector_db.database,
            "index": vector_db.index,
            "query": "{{doc_vectors}}",
            "top_k": 10,
            "depends_on": ["embed_docs"],
            "output": ["found"],
            **fields,
        }
        wf = await create_workflow(client, admin, [ingest_steps("x", "x")[0], find])
        ex = await start_execution(client, admin, wf, {"documents": [DOCUMENTS[2]], "lang": "en"})
        final = await wait_for(client, admin, wf, ex, timeout=60.0)
        assert final["status"] == "completed", final
        found: list[dict[str, Any]] = final["steps"]["find"]["outputs"]["found"]
        return found

    in_acme = await search(namespace="acme")
    assert in_acme[0]["id"] == "en-2"
    assert {m["id"] for m in in_acme} == {"en-1", "fr-1", "en-2"}
    assert await search(namespace="other") == []
    english = await search(namespace="acme", filter={"lang": "{{lang}}"})
    assert [m["id"] for m in english] == ["en-2", "en-1"]
    assert english[0]["metadata"] == {"lang": "en", "year": 2023}
    recent = await search(namespace="acme", filter={"lang": "en", "year": 2024})
    assert [m["id"] for m in recent] == ["en-1"]


async def test_refused_credentials_fail_after_one_call_and_never_leak(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    vector_db: VectorDb,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A stored secret wins over the environment's (correct) key.
    await put_secret(client, admin, vector_db.key_setting, WRONG_KEY)
    caplog.set_level(logging.DEBUG)
    before = len(vector_db.fake.requests)

    final = await ingest(client, admin, vector_db.database, vector_db.index, DOCUMENTS)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderAuthError"
    assert vector_db.label in final["error"]["message"]
    assert vector_db.key_setting in final["error"]["message"]
    assert len(vector_db.fake.requests) - before == 1
    assert WRONG_KEY not in str(final)
    assert WRONG_KEY not in caplog.text
    for environment_value in vector_db.environ.values():
        if "KEY" in environment_value or len(environment_value) > 20:
            assert environment_value not in str(final)


async def test_rate_limits_are_retried(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    assert (await ingest(client, admin, vector_db.database, vector_db.index, DOCUMENTS))[
        "status"
    ] == "completed"
    vector_db.fake.fail_next(429, retry_after=1)
    before = len(vector_db.data_calls())

    final = await run_rag(client, admin, vector_db.database, vector_db.index, DOCUMENTS[0])

    assert final["status"] == "completed", final
    assert final["steps"]["search_docs"]["outputs"]["relevant_docs"][0]["text"] == DOCUMENTS[0]
    calls = vector_db.data_calls()[before:]
    assert [call.status for call in calls] == [429, 200]


async def test_server_errors_are_retried_then_fail_readably(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    assert (await ingest(client, admin, vector_db.database, vector_db.index, DOCUMENTS))[
        "status"
    ] == "completed"
    vector_db.fake.fail_next(503, times=3, message="the cluster is restarting")
    before = len(vector_db.data_calls())

    final = await run_rag(client, admin, vector_db.database, vector_db.index, DOCUMENTS[0])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderUnavailable"
    # 503 over REST; over gRPC (Weaviate) the status is INTERNAL, reported as 500.
    assert final["error"]["message"].startswith(f"{vector_db.label} failed (5")
    assert "the cluster is restarting" in final["error"]["message"]
    assert [call.status for call in vector_db.data_calls()[before:]] == [503, 503, 503]


async def test_an_unreachable_database_fails_the_execution_within_a_minute(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    # Nothing listens there: connections are refused on every attempt.
    dead_url = vector_db.unreachable_url(free_port())
    await put_secret(client, admin, vector_db.url_setting, dead_url)
    started = time.monotonic()

    final = await ingest(client, admin, vector_db.database, vector_db.index, DOCUMENTS)

    assert time.monotonic() - started < 60
    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderUnavailable"
    assert final["error"]["message"].startswith(f"could not reach {vector_db.label}")
