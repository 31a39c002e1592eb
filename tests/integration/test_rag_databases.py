"""RAG on the external vector databases, through the API and each official SDK against the
database's fake: Qdrant (qdrant-client, REST), Pinecone (pinecone, control and data plane)
and Weaviate (weaviate-client v4, REST and gRPC). The behaviours every database must show
run once per database (the ``vector_db`` fixture is parametrized); the tests after them
are one database's own. pgvector, the embedded default, has its own module
(``test_rag_pgvector.py``): its database is the orchestrator's, with no fake in between.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from llm_orchestrator.steps.vectors import document_id
from llm_orchestrator.vectorstores import EnvSettingResolver, VectorRecord
from llm_orchestrator.vectorstores.qdrant import QdrantStore, point_id
from llm_orchestrator.vectorstores.weaviate import WeaviateStore, collection_name
from tests.fakes.base import FakeServer, RecordedRequest
from tests.fakes.embeddings import DEFAULT_DIM
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.pinecone_server import FakePinecone
from tests.fakes.qdrant_server import FakeQdrant
from tests.fakes.weaviate_server import FakeWeaviate
from tests.integration.conftest import FAKE_API_KEY, Session
from tests.integration.execution_support import (
    create_workflow,
    prompts,
    start_execution,
    wait_for,
)
from tests.integration.rag_support import DOCUMENTS, ingest, ingest_steps, run_rag
from tests.support import free_port

QDRANT_KEY = "qdrant-test-key-3f9a"
PINECONE_KEY = "pcsk-test-key-71c2"
WEAVIATE_KEY = "weaviate-test-key-5d0e"
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


def _qdrant() -> Iterator[VectorDb]:
    with FakeQdrant.start(api_key=QDRANT_KEY) as fake:
        yield VectorDb(
            database="qdrant",
            index="knowledge-base",
            label="Qdrant",
            fake=fake,
            environ={"QDRANT_URL": fake.url, "QDRANT_API_KEY": QDRANT_KEY},
            url_setting="QDRANT_URL",
            key_setting="QDRANT_API_KEY",
            is_data_call=lambda r: "/points" in r.path,
            unreachable_url=lambda port: f"http://127.0.0.1:{port}",
        )


def _pinecone() -> Iterator[VectorDb]:
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


def _weaviate() -> Iterator[VectorDb]:
    with FakeWeaviate.start(api_key=WEAVIATE_KEY) as fake:
        yield VectorDb(
            database="weaviate",
            index="knowledge-base",
            label="Weaviate",
            fake=fake,
            environ={
                "WEAVIATE_URL": fake.url,
                "WEAVIATE_GRPC_URL": fake.grpc_url,
                "WEAVIATE_API_KEY": WEAVIATE_KEY,
            },
            url_setting="WEAVIATE_URL",
            key_setting="WEAVIATE_API_KEY",
            is_data_call=lambda r: r.method == "GRPC",
            unreachable_url=lambda port: f"http://127.0.0.1:{port}",
        )


DATABASES: dict[str, Callable[[], Iterator[VectorDb]]] = {
    "qdrant": _qdrant,
    "pinecone": _pinecone,
    "weaviate": _weaviate,
}
PINECONE_ONLY = pytest.mark.parametrize("vector_db", ["pinecone"], indirect=True)


@pytest.fixture(params=sorted(DATABASES))
def vector_db(request: pytest.FixtureRequest) -> Iterator[VectorDb]:
    yield from DATABASES[request.param]()


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


async def put_secret(client: httpx.AsyncClient, admin: Session, key: str, value: str) -> None:
    response = await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": key, "value": value}
    )
    assert response.status_code in (200, 201), response.text


# --- every database -----------------------------------------------------------------------


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


# --- Qdrant -------------------------------------------------------------------------------


def test_a_collection_is_created_with_cosine_distance_on_first_upsert() -> None:
    """Checked directly on the fake: the shape qdrant-client sent."""
    with FakeQdrant.start() as fake:
        store = QdrantStore(EnvSettingResolver({"QDRANT_URL": fake.url}), timeout_seconds=5)

        async def go() -> None:
            records = [VectorRecord("a", [1.0, 0.0, 0.0], "alpha", {"k": 1})]
            assert await store.upsert("kb", records, namespace="n1") == ["a"]
            await store.aclose()

        asyncio.run(go())

        collection = fake.collections["kb"]
        assert (collection.size, collection.distance) == (3, "Cosine")
        assert collection.points[point_id("n1", "a")][1] == {
            "id": "a",
            "text": "alpha",
            "metadata": {"k": 1},
            "namespace": "n1",
        }


def test_ef_search_reaches_qdrant_as_hnsw_ef() -> None:
    """Checked on the fake: the search parameters qdrant-client sent, with and without."""
    with FakeQdrant.start() as fake:
        store = QdrantStore(EnvSettingResolver({"QDRANT_URL": fake.url}), timeout_seconds=5)

        async def go() -> list[list[str]]:
            records = [VectorRecord("a", [1.0, 0.0, 0.0], "alpha")]
            await store.upsert("kb", records, namespace=None)
            found = []
            for ef_search in (64, None):
                matches = await store.search(
                    "kb", [1.0, 0.1, 0.0], top_k=1, filter=None, namespace=None, ef_search=ef_search
                )
                found.append([match.id for match in matches])
            await store.aclose()
            return found

        assert asyncio.run(go()) == [["a"], ["a"]]
        assert [(params or {}).get("hnsw_ef") for params in fake.search_params] == [64, None]


# --- Pinecone -----------------------------------------------------------------------------


@PINECONE_ONLY
async def test_upsert_into_a_missing_index_says_pinecone_indexes_are_made_by_the_user(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, vector_db: VectorDb
) -> None:
    final = await ingest(client, admin, "pinecone", "not-created", DOCUMENTS)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["message"].startswith(
        "Pinecone index 'not-created' does not exist: create it in Pinecone"
    )


@PINECONE_ONLY
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


@PINECONE_ONLY
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


# --- Weaviate -----------------------------------------------------------------------------


def test_index_names_map_to_valid_collection_names_deterministically() -> None:
    assert collection_name("knowledge-base") == collection_name("knowledge-base")
    assert collection_name("knowledge-base").startswith("Knowledge_base_")
    assert collection_name("KB") != collection_name("kb")
    assert collection_name("42 docs").startswith("I42_docs_")
    assert re.fullmatch(r"[A-Z][_0-9A-Za-z]*", collection_name('Ünï "kb"; drop'))


def test_a_collection_is_created_with_self_provided_vectors_and_a_text_property() -> None:
    """Checked directly on the fake: the schema weaviate-client sent."""
    with FakeWeaviate.start() as fake:
        environ = {"WEAVIATE_URL": fake.url, "WEAVIATE_GRPC_URL": fake.grpc_url}
        store = WeaviateStore(EnvSettingResolver(environ), timeout_seconds=5)

        async def go() -> None:
            records = [VectorRecord("a", [1.0, 0.0, 0.0], "alpha", {"k": 1})]
            assert await store.upsert("kb", records, namespace="n1") == ["a"]
            await store.aclose()

        asyncio.run(go())

        collection = fake.collections[collection_name("kb")]
        config = collection.config
        assert config["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
        assert config["vectorConfig"]["default"]["vectorIndexConfig"]["distance"] == "cosine"
        assert {p["name"] for p in config["properties"]} >= {"text", "doc_id", "namespace"}
        (stored,) = collection.objects.values()
        assert stored[1]["text"] == "alpha"
        assert stored[1]["meta_k"] == 1
