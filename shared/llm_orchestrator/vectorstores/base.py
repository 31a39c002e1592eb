"""Database-neutral records, matches, settings and the protocol every adapter implements.

Nothing here knows a vendor. Adapters (``pgvector``, ``qdrant``, ``pinecone``,
``weaviate``) implement ``VectorStore`` and raise the providers' errors
(``ProviderRateLimited``, ``ProviderUnavailable``, ``ProviderAuthError``,
``ProviderBadRequest``), because the compiled state machine retries by those names: a
vector database is one more remote service a step calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "EnvSettingResolver",
    "FallbackSettingResolver",
    "FilterValue",
    "SettingResolver",
    "VectorMatch",
    "VectorRecord",
    "VectorStore",
    "credential_key",
    "public_endpoint",
]

FilterValue = str | int | float | bool
"""Metadata equality compares scalars only: every database can express that."""


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One document to write: its id, vector, text and (JSON) metadata."""

    id: str
    vector: list[float] = field(repr=False)
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorMatch:
    """One search result; ``score`` is a similarity, higher is closer, on every database."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]

    def as_output(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


class VectorStore(Protocol):
    """One database. ``index`` is the workflow's index name, mapped by the adapter onto
    whatever the database calls it (a table, a collection, an index)."""

    async def upsert(
        self, index: str, records: Sequence[VectorRecord], *, namespace: str | None
    ) -> list[str]:
        """Insert or replace ``records`` by id; returns the ids written, in order."""
        ...

    async def search(
        self,
        index: str,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: Mapping[str, FilterValue] | None,
        namespace: str | None,
        ef_search: int | None = None,
    ) -> list[VectorMatch]:
        """The ``top_k`` nearest records by cosine similarity, best first. ``ef_search``:
        the HNSW candidate list where the database takes one per query (None: its default);
        a database without one ignores it (definitions refuse it for those)."""
        ...

    async def aclose(self) -> None: ...


class SettingResolver(Protocol):
    """Where a database's settings come from (``QDRANT_URL``, ``PINECONE_API_KEY``, …)."""

    async def resolve(self, names: Sequence[str], /) -> dict[str, str]:
        """The configured ones among ``names`` (blank values count as unset)."""
        ...


class EnvSettingResolver:
    """Settings from an injected mapping of environment variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    async def resolve(self, names: Sequence[str], /) -> dict[str, str]:
        found = {name: self._environ.get(name, "").strip() for name in names}
        return {name: value for name, value in found.items() if value}


class FallbackSettingResolver:
    """Per name, the first resolver that has a value wins (the secrets store, then the
    environment), exactly as provider credentials resolve."""

    def __init__(self, *resolvers: SettingResolver) -> None:
        self._resolvers = resolvers

    async def resolve(self, names: Sequence[str], /) -> dict[str, str]:
        found: dict[str, str] = {}
        for resolver in self._resolvers:
            missing = [name for name in names if name not in found]
            if not missing:
                break
            found.update(await resolver.resolve(missing))
        return found


def credential_key(*parts: str | None) -> str:
    """A cache key for a client built from these settings, holding no secret itself."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(b"\x00" if part is None else b"\x01" + part.encode())
    return digest.hexdigest()


def public_endpoint(url: str) -> str:
    """``scheme://host:port`` of a URL: safe in an error message (no user, password or
    query string, where people do put keys)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured URL"
    if not parts.scheme or not host:
        return "the configured URL"
    return f"{parts.scheme}://{host}{port}"
