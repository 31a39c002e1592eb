"""Weaviate through weaviate-client v4 (REST + gRPC) against the fake Weaviate."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from llm_orchestrator.vectorstores import EnvSettingResolver, VectorRecord
from llm_orchestrator.vectorstores.weaviate import WeaviateStore, collection_name
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.weaviate_server import FakeWeaviate
from tests.integration.execution_support import FAKE_API_KEY, fake_openai
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

WEAVIATE_KEY = "weaviate-test-key-5d0e"


@pytest.fixture
def vector_db() -> Iterator[VectorDb]:
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
