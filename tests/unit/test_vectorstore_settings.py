"""Vector-store plumbing that needs no database: names, endpoints, settings resolution."""

from __future__ import annotations

from llm_orchestrator.store.vector_tables import table_name
from llm_orchestrator.vectorstores import EnvSettingResolver, FallbackSettingResolver
from llm_orchestrator.vectorstores.base import credential_key, public_endpoint


def test_table_names_are_deterministic_short_and_distinct() -> None:
    long_name = "x" * 256

    assert table_name("knowledge-base") == table_name("knowledge-base")
    assert table_name("knowledge-base").startswith("ix_knowledge_base_")
    assert table_name("KB") != table_name("kb")
    assert len(table_name(long_name).encode()) <= 63
    assert table_name('"; DROP TABLE users; --').startswith("ix_drop_table_users_")


def test_an_endpoint_in_a_message_keeps_no_credentials() -> None:
    assert public_endpoint("https://user:pw@db.example.com:6333/path?api-key=k") == (
        "https://db.example.com:6333"
    )
    assert public_endpoint("not a url") == "the configured URL"


def test_a_credential_key_holds_no_secret_and_tells_sets_apart() -> None:
    key = credential_key("http://q:6333", "secret-key")

    assert "secret-key" not in key
    assert key != credential_key("http://q:6333", None)
    assert key != credential_key("http://q:6333secret-key", None)


async def test_the_first_resolver_wins_name_by_name() -> None:
    stored = EnvSettingResolver({"QDRANT_API_KEY": "from-secret"})
    environment = EnvSettingResolver({"QDRANT_API_KEY": "from-env", "QDRANT_URL": " http://q "})
    resolver = FallbackSettingResolver(stored, environment)

    found = await resolver.resolve(["QDRANT_URL", "QDRANT_API_KEY", "MISSING"])

    assert found == {"QDRANT_API_KEY": "from-secret", "QDRANT_URL": "http://q"}


async def test_a_blank_setting_counts_as_unset() -> None:
    assert await EnvSettingResolver({"QDRANT_URL": "  \n"}).resolve(["QDRANT_URL"]) == {}
