"""Vector databases behind one protocol: pgvector (the embedded default), Qdrant, Pinecone
and Weaviate.

Importing this package imports no vendor SDK; each adapter imports its own on first use.
"""

from llm_orchestrator.vectorstores.base import (
    EnvSettingResolver,
    FallbackSettingResolver,
    FilterValue,
    SettingResolver,
    VectorMatch,
    VectorRecord,
    VectorStore,
)
from llm_orchestrator.vectorstores.registry import ADAPTERS, VectorStoreRegistry

__all__ = [
    "ADAPTERS",
    "EnvSettingResolver",
    "FallbackSettingResolver",
    "FilterValue",
    "SettingResolver",
    "VectorMatch",
    "VectorRecord",
    "VectorStore",
    "VectorStoreRegistry",
]
