"""Database name → adapter, as a workflow step names it (``"database": "qdrant"``).

Adapter modules are imported on first use of their database and each imports its SDK only
when it first builds a client, so a process that never searches Weaviate never loads
``weaviate`` or ``grpc``. One adapter per name; each caches its clients per credential set.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from llm_orchestrator.providers.errors import UnsupportedProvider
from llm_orchestrator.vectorstores.base import SettingResolver, VectorStore

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Database

__all__ = ["ADAPTERS", "DEFAULT_TIMEOUT_SECONDS", "VectorStoreRegistry"]

DEFAULT_TIMEOUT_SECONDS = 20.0
"""Bound on one call to a vector database (connect + answer); the Retry policy does the rest."""

ADAPTERS: Mapping[str, str] = MappingProxyType(
    {
        "pgvector": "llm_orchestrator.vectorstores.pgvector:PgVectorStore",
        "qdrant": "llm_orchestrator.vectorstores.qdrant:QdrantStore",
        "pinecone": "llm_orchestrator.vectorstores.pinecone:PineconeStore",
        "weaviate": "llm_orchestrator.vectorstores.weaviate:WeaviateStore",
    }
)


class VectorStoreRegistry:
    def __init__(
        self,
        settings: SettingResolver,
        *,
        own_database: Database | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        adapters: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._own_database = own_database
        self._timeout = timeout_seconds
        self._adapters = dict(ADAPTERS if adapters is None else adapters)
        self._instances: dict[str, VectorStore] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._adapters))

    def store(self, name: str) -> VectorStore:
        instance = self._instances.get(name)
        if instance is None:
            target = self._adapters.get(name)
            if target is None:
                available = ", ".join(self.names) or "none"
                raise UnsupportedProvider(
                    f"vector database '{name}' is not available in this build"
                    f" (available: {available})",
                    provider=name,
                )
            module_name, _, class_name = target.partition(":")
            factory: Any = getattr(importlib.import_module(module_name), class_name)
            kwargs: dict[str, Any] = {"timeout_seconds": self._timeout}
            if name == "pgvector":
                kwargs["own_database"] = self._own_database
            instance = factory(self._settings, **kwargs)
            self._instances[name] = instance
        return instance

    async def aclose(self) -> None:
        instances, self._instances = self._instances, {}
        for store in instances.values():
            await store.aclose()
