"""Qdrant through qdrant-client (REST) against the fake Qdrant server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.qdrant_server import FakeQdrant
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

QDRANT_KEY = "qdrant-test-key-3f9a"


@pytest.fixture
def vector_db() -> Iterator[VectorDb]:
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


def test_a_collection_is_created_with_cosine_distance_on_first_upsert() -> None:
    """Checked directly on the fake: the shape qdrant-client sent."""
    import asyncio

    from llm_orchestrator.vectorstores import EnvSettingResolver, VectorRecord
    from llm_orchestrator.vectorstores.qdrant import QdrantStore, point_id

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
