"""RAG on pgvector, the zero-configuration default: the orchestrator's own PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from llm_orchestrator.runtime import resolve_secrets_key
from llm_orchestrator.secrets import DbSecretsStore
from llm_orchestrator.server import LocalServer
from llm_orchestrator.steps.vectors import document_id
from llm_orchestrator.store.secrets import SecretRepository
from llm_orchestrator.store.vector_tables import table_name
from tests.fakes.embeddings import DEFAULT_DIM
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

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


async def test_rag_workflow_answers_from_the_nearest_document(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    ingested = await ingest(client, admin, "pgvector", "knowledge-base", DOCUMENTS)
    assert ingested["status"] == "completed", ingested
    ids = ingested["steps"]["store_docs"]["outputs"]["ids"]
    assert ids == [document_id(text) for text in DOCUMENTS]

    # The fake embeds equal texts equally: the query is the nearest document's own text.
    final = await run_rag(client, admin, "pgvector", "knowledge-base", DOCUMENTS[2])

    assert final["status"] == "completed", final
    matches = final["steps"]["search_docs"]["outputs"]["relevant_docs"]
    assert len(matches) == 4
    assert matches[0]["id"] == ids[2]
    assert matches[0]["text"] == DOCUMENTS[2]
    assert matches[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    assert set(matches[0]) == {"id", "score", "text", "metadata"}
    prompt = prompts(fake_openai)[-1]
    context = prompt.split("Context:\n", 1)[1].split("\n\nQuestion:")[0].splitlines()
    assert context[0] == DOCUMENTS[2]
    assert sorted(context) == sorted(DOCUMENTS)


async def test_reingesting_updates_instead_of_duplicating(
    client: httpx.AsyncClient, admin: Session, database_url: str
) -> None:
    first = await ingest(client, admin, "pgvector", "kb", DOCUMENTS)
    second = await ingest(client, admin, "pgvector", "kb", DOCUMENTS)

    assert first["status"] == second["status"] == "completed"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f'SELECT count(*) FROM vectors."{table_name("kb")}"').fetchone()
    assert rows == (len(DOCUMENTS),)


async def test_filter_and_namespace_narrow_the_search(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    documents = [
        {"id": "en-1", "text": DOCUMENTS[0], "metadata": {"lang": "en", "year": 2024}},
        {"id": "fr-1", "text": DOCUMENTS[1], "metadata": {"lang": "fr", "year": 2024}},
        {"id": "en-2", "text": DOCUMENTS[2], "metadata": {"lang": "en", "year": 2023}},
    ]
    # Objects carry ids and metadata; the embed step reads their texts from another input.
    workflow = ingest_steps("pgvector", "kb", namespace="{{tenant}}")
    workflow[0]["input"] = "{{texts}}"
    workflow_id = await create_workflow(client, admin, workflow)
    inputs = {"documents": documents, "texts": [d["text"] for d in documents], "tenant": "acme"}
    execution_id = await start_execution(client, admin, workflow_id, inputs)
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed", final
    assert final["steps"]["store_docs"]["outputs"]["ids"] == ["en-1", "fr-1", "en-2"]

    async def search(**fields: Any) -> list[dict[str, Any]]:
        steps = ingest_steps("pgvector", "kb")[:1] + [
            {
                "id": "find",
                "type": "vector_search",
                "database": "pgvector",
                "index": "kb",
                "query": "{{doc_vectors}}",
                "top_k": 10,
                "depends_on": ["embed_docs"],
                "output": ["found"],
                **fields,
            }
        ]
        wf = await create_workflow(client, admin, steps)
        ex = await start_execution(client, admin, wf, {"documents": [DOCUMENTS[2]], "lang": "en"})
        final = await wait_for(client, admin, wf, ex)
        assert final["status"] == "completed", final
        found: list[dict[str, Any]] = final["steps"]["find"]["outputs"]["found"]
        return found

    assert await search() == []  # the default namespace holds nothing
    in_acme = await search(namespace="acme")
    assert [m["id"] for m in in_acme][0] == "en-2"
    assert {m["id"] for m in in_acme} == {"en-1", "fr-1", "en-2"}
    # A wider HNSW candidate list (ef_search) reaches the search: the same answers here.
    assert await search(namespace="acme", ef_search=200) == in_acme
    english = await search(namespace="acme", filter={"lang": "{{lang}}"})
    assert [m["id"] for m in english] == ["en-2", "en-1"]
    assert english[0]["metadata"] == {"lang": "en", "year": 2023}
    recent = await search(namespace="acme", filter={"lang": "en", "year": 2024})
    assert [m["id"] for m in recent] == ["en-1"]


async def test_a_vector_of_another_dimension_is_a_clear_permanent_error(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    assert (await ingest(client, admin, "pgvector", "kb", DOCUMENTS))["status"] == "completed"
    fake_openai.embedding_dim = 12

    final = await ingest(client, admin, "pgvector", "kb", ["one more"])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["message"] == (
        f"pgvector index 'kb' holds {DEFAULT_DIM}-dimension vectors; got 12 dimensions "
        "(a model with another output size needs its own index)"
    )


async def test_searching_an_index_nobody_filled_says_so(
    client: httpx.AsyncClient, admin: Session
) -> None:
    final = await run_rag(client, admin, "pgvector", "never-filled", "anything")

    assert final["status"] == "failed"
    assert final["error"]["message"] == (
        "pgvector index 'never-filled' does not exist yet: a vector_upsert creates it"
    )


async def test_mismatched_vectors_and_documents_fail_the_step_permanently(
    client: httpx.AsyncClient, admin: Session
) -> None:
    steps = [
        {
            "id": "store",
            "type": "vector_upsert",
            "database": "pgvector",
            "index": "kb",
            "vectors": "{{vectors}}",
            "documents": "{{documents}}",
            "output": ["ids"],
        }
    ]
    workflow_id = await create_workflow(client, admin, steps)
    execution_id = await start_execution(
        client, admin, workflow_id, {"vectors": [[1.0, 0.0]], "documents": ["a", "b"]}
    )

    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "StepConfigurationError"
    assert final["error"]["message"] == (
        "vectors has 1 entries but documents has 2; they pair up by position"
    )


async def test_an_index_name_is_data_never_sql(
    client: httpx.AsyncClient, admin: Session, database_url: str
) -> None:
    index = 'kb"; DROP TABLE users; --'

    final = await ingest(client, admin, "pgvector", index, DOCUMENTS[:1])

    assert final["status"] == "completed", final
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() is not None
        rows = conn.execute(f'SELECT text FROM vectors."{table_name(index)}"').fetchall()
    assert rows == [(DOCUMENTS[0],)]


@pytest.fixture
def other_database_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A second database on the test server, with the ``vector`` extension and schema."""
    name = f"llmo_vec_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield make_conninfo(pg_server_url, dbname=name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def test_a_reachable_pgvector_url_holds_the_index_instead_of_the_own_database(
    client: httpx.AsyncClient, admin: Session, database_url: str, other_database_url: str
) -> None:
    response = await client.post(
        "/admin/secrets",
        headers=admin.headers,
        json={"key": "PGVECTOR_URL", "value": other_database_url},
    )
    assert response.status_code in (200, 201), response.text

    ingested = await ingest(client, admin, "pgvector", "kb-elsewhere", DOCUMENTS)
    first = await run_rag(client, admin, "pgvector", "kb-elsewhere", DOCUMENTS[3])
    second = await run_rag(client, admin, "pgvector", "kb-elsewhere", DOCUMENTS[0])

    assert ingested["status"] == "completed", ingested
    for final, text in ((first, DOCUMENTS[3]), (second, DOCUMENTS[0])):
        assert final["status"] == "completed", final
        assert final["steps"]["search_docs"]["outputs"]["relevant_docs"][0]["text"] == text
    table = f'vectors."{table_name("kb-elsewhere")}"'
    with psycopg.connect(other_database_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (len(DOCUMENTS),)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)


async def test_an_unreachable_pgvector_url_fails_within_a_minute_without_its_password(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "s3cret-pgvector-password-81f2"
    url = f"postgresql://vec:{password}@127.0.0.1:{free_port()}/vectors"
    response = await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": "PGVECTOR_URL", "value": url}
    )
    assert response.status_code in (200, 201), response.text
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()

    final = await ingest(client, admin, "pgvector", "kb", DOCUMENTS)

    assert time.monotonic() - started < 60
    # A refused connection fails its attempt at once: no attempt waits out the pool's
    # connection timeout (three would take 3 x EXTERNAL_CONNECT_SECONDS), so the pool,
    # whose background attempts log "error connecting", is never even opened.
    assert "error connecting" not in caplog.text
    assert final["status"] == "failed"
    assert final["error"] == {
        "type": "ProviderUnavailable",
        "message": "pgvector could not reach the PostgreSQL named by PGVECTOR_URL",
        "step_id": "store_docs",
    }
    assert password not in str(final)
    assert password not in caplog.text


async def test_a_pgvector_url_stored_here_or_by_another_process_applies_at_once(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    server: LocalServer,
    database_url: str,
) -> None:
    ingested = await ingest(client, admin, "pgvector", "kb", DOCUMENTS)
    assert ingested["status"] == "completed", ingested
    unreachable = f"postgresql://vec:pw@127.0.0.1:{free_port()}/vectors"

    # Stored through this server's API, it applies to the very next search.
    response = await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": "PGVECTOR_URL", "value": unreachable}
    )
    assert response.status_code == 200, response.text
    failed = await run_rag(client, admin, "pgvector", "kb", DOCUMENTS[1])

    assert failed["status"] == "failed"
    assert failed["error"]["message"] == (
        "pgvector could not reach the PostgreSQL named by PGVECTOR_URL"
    )

    # Stored by another process, which shares only the database with this one: the write's
    # commit tells every serving process to drop its cached value, so the searches that
    # start once that notice has arrived use the new URL (here: this server's own database).
    runtime = server.runtime
    elsewhere = DbSecretsStore(
        SecretRepository(runtime.db), partial(resolve_secrets_key, runtime.settings), runtime.clock
    )
    await elsewhere.put("PGVECTOR_URL", database_url)
    deadline = asyncio.get_running_loop().time() + 30
    while (searched := await run_rag(client, admin, "pgvector", "kb", DOCUMENTS[1]))[
        "status"
    ] != "completed":
        assert asyncio.get_running_loop().time() < deadline, searched
    assert searched["steps"]["search_docs"]["outputs"]["relevant_docs"][0]["text"] == DOCUMENTS[1]
