"""Pinecone through the pinecone SDK against the fake Pinecone (control + data plane)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.embeddings import DEFAULT_DIM
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.pinecone_server import FakePinecone
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    FAKE_API_KEY,
    create_workflow,
    fake_openai,
    start_execution,
    wait_for,
)
from tests.integration.rag_support import DOCUMENTS, ingest, ingest_steps, run_rag
from tests.integration.vector_db_cases import (
    VectorDb,
    test_an_unreachable_database_fails_the_execution_within_a_minute,
    test_filter_and_namespace_narrow_the_search,
    test_rag_answers_from_the_nearest_document,
    test_rate_limits_are_retried,
    test_refused_credentials_fail_after_one_call_and_never_leak,
    test_server_errors_are_retried_then_fail_readably,
)

__all__ = [
    "fake_openai",
    "test_an_unreachable_database_fails_the_execution_within_a_minute",
    "test_filter_and_namespace_narrow_the_search",
    "test_rag_answers_from_the_nearest_document",
    "test_rate_limits_are_retried",
    "test_refused_credentials_fail_after_one_call_and_never_leak",
    "test_server_errors_are_retried_then_fail_readably",
]

PINECONE_KEY = "pcsk-test-key-71c2"


@pytest.fixture
def vector_db() -> Iterator[VectorDb]:
    with FakePinecone.start(api_key=PINECONE_KEY) as fake:
        fake.create_index("knowledge-base", dimension=DEFAULT_DIM)
        yield VectorDb(
            database="pinecone",
            index="knowledge-base",
            label="Pinecone",
            fake=fake,
            environ={"PINECONE_API_KEY": PINECONE_KEY, "PINECONE_CONTROLLER_HOST": fake.url},
            url_setting="PINECONE_CONTROLLER_HOST",
            key_setting="PINECONE_API_KEY",
            is_data_call=lambda r: r.path in ("/query", "/vectors/upsert"),
            unreachable_url=lambda port: f"http://127.0.0.1:{port}",
        )


@pytest.fixture
async def server(
    settings: Settings, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> AsyncIterator[LocalServer]:
    environ = {
        "OPENAI_API_KEY": FAKE_API_KEY,
        "OPENAI_BASE_URL": fake_openai.base_url,
        **vector_db.environ,
    }
    local = build_local_server(settings, database_url=settings.database_url, environ=environ)
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


async def test_upsert_into_a_missing_index_says_pinecone_indexes_are_made_by_the_user(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    final = await ingest(client, admin, "pinecone", "not-created", DOCUMENTS)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["message"].startswith(
        "Pinecone index 'not-created' does not exist: create it in Pinecone"
    )


async def test_the_index_host_is_looked_up_once(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    assert (await ingest(client, admin, "pinecone", "knowledge-base", DOCUMENTS))[
        "status"
    ] == "completed"
    assert (await run_rag(client, admin, "pinecone", "knowledge-base", DOCUMENTS[0]))[
        "status"
    ] == "completed"

    describes = vector_db.fake.requests_to("/indexes/knowledge-base", method="GET")
    assert len(describes) == 1


async def test_text_and_metadata_are_stored_flat_as_pinecone_requires(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    documents = [{"id": "d1", "text": DOCUMENTS[0], "metadata": {"lang": "en"}}]
    steps = ingest_steps("pinecone", "knowledge-base", namespace="tenant-a")
    steps[0]["input"] = "{{texts}}"
    workflow_id = await create_workflow(client, admin, steps)
    execution_id = await start_execution(
        client, admin, workflow_id, {"documents": documents, "texts": [DOCUMENTS[0]]}
    )
    assert (await wait_for(client, admin, workflow_id, execution_id))["status"] == "completed"

    stored = vector_db.fake.indexes["knowledge-base"].namespaces["tenant-a"]["d1"]
    assert stored[1] == {"lang": "en", "text": DOCUMENTS[0]}
