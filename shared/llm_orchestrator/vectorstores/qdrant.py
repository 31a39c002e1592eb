"""Qdrant through ``qdrant-client`` over REST.

Settings: ``QDRANT_URL`` (required, e.g. ``http://localhost:6333``) and ``QDRANT_API_KEY``.
An index is a collection, created with cosine distance on the first upsert into it. Qdrant
ids are unsigned integers or UUIDs, so a point's id is ``uuid5(namespace + id)`` and the
document's own id, text, metadata and namespace travel in the payload (``id``, ``text``,
``metadata``, ``namespace``). ``namespace`` is therefore a payload filter: every search
matches the namespace it names (none = ``""``). ``filter`` keys match ``metadata.<key>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llm_orchestrator.providers.errors import (
    ProviderBadRequest,
    ProviderError,
    ProviderInvalidResponse,
)
from llm_orchestrator.vectorstores.base import (
    FilterValue,
    SettingResolver,
    VectorMatch,
    VectorRecord,
    credential_key,
    public_endpoint,
)
from llm_orchestrator.vectorstores.errors import (
    from_status,
    not_configured,
    parse_retry_after,
    unreachable,
)

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient

__all__ = ["QDRANT_API_KEY", "QDRANT_URL", "QdrantStore", "point_id"]

NAME = "qdrant"
LABEL = "Qdrant"
QDRANT_URL = "QDRANT_URL"
QDRANT_API_KEY = "QDRANT_API_KEY"
POINT_NAMESPACE = uuid.UUID("6f1d2c4e-8a53-4c1b-9a57-0c3e5f7d9b21")
"""Fixed, so the same document always maps to the same Qdrant point."""
UPSERT_BATCH = 256


def point_id(namespace: str, document_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{namespace}\x00{document_id}"))


class QdrantStore:
    def __init__(self, settings: SettingResolver, *, timeout_seconds: float) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._clients: dict[str, tuple[AsyncQdrantClient, str, set[str]]] = {}

    async def upsert(
        self, index: str, records: Sequence[VectorRecord], *, namespace: str | None
    ) -> list[str]:
        from qdrant_client import models

        client, endpoint, known = await self._client()
        space = namespace or ""
        with _translated(index, endpoint, forget=known):
            if index not in known:
                await self._ensure_collection(client, index, len(records[0].vector))
                known.add(index)
            for start in range(0, len(records), UPSERT_BATCH):
                batch = records[start : start + UPSERT_BATCH]
                await client.upsert(
                    collection_name=index,
                    wait=True,
                    points=[
                        models.PointStruct(
                            id=point_id(space, record.id),
                            vector=record.vector,
                            payload={
                                "id": record.id,
                                "text": record.text,
                                "metadata": record.metadata,
                                "namespace": space,
                            },
                        )
                        for record in batch
                    ],
                )
        return [record.id for record in records]

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
        from qdrant_client import models

        client, endpoint, _ = await self._client()
        conditions: list[Any] = [
            models.FieldCondition(key="namespace", match=models.MatchValue(value=namespace or ""))
        ]
        for key, value in (filter or {}).items():
            if isinstance(value, float):
                # Qdrant matches keywords, integers and booleans; a float is a closed range.
                condition = models.FieldCondition(
                    key=f"metadata.{key}", range=models.Range(gte=value, lte=value)
                )
            else:
                condition = models.FieldCondition(
                    key=f"metadata.{key}", match=models.MatchValue(value=value)
                )
            conditions.append(condition)
        with _translated(index, endpoint):
            answer = await client.query_points(
                collection_name=index,
                query=list(vector),
                limit=top_k,
                query_filter=models.Filter(must=conditions),
                search_params=(
                    None if ef_search is None else models.SearchParams(hnsw_ef=ef_search)
                ),
                with_payload=True,
            )
        matches = []
        for point in answer.points:
            payload = point.payload or {}
            matches.append(
                VectorMatch(
                    id=str(payload.get("id", point.id)),
                    score=float(point.score),
                    text=str(payload.get("text", "")),
                    metadata=dict(payload.get("metadata") or {}),
                )
            )
        return matches

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client, _, _ in clients.values():
            await client.close()

    async def _client(self) -> tuple[AsyncQdrantClient, str, set[str]]:
        found = await self._settings.resolve([QDRANT_URL, QDRANT_API_KEY])
        url = found.get(QDRANT_URL)
        if url is None:
            raise not_configured(NAME, LABEL, QDRANT_URL)
        api_key = found.get(QDRANT_API_KEY)
        key = credential_key(url, api_key)
        entry = self._clients.get(key)
        if entry is None:
            import warnings

            from qdrant_client import AsyncQdrantClient

            with warnings.catch_warnings():
                # "Api key is used with an insecure connection": a local or test server.
                warnings.simplefilter("ignore", UserWarning)
                client = AsyncQdrantClient(
                    url=url,
                    api_key=api_key,
                    prefer_grpc=False,
                    timeout=max(1, int(self._timeout)),
                    # The version probe is one more round trip on every cold start.
                    check_compatibility=False,
                )
            entry = (client, public_endpoint(url), set())
            self._clients[key] = entry
        return entry

    async def _ensure_collection(self, client: AsyncQdrantClient, index: str, size: int) -> None:
        from qdrant_client import models
        from qdrant_client.http.exceptions import UnexpectedResponse

        if await client.collection_exists(index):
            return
        try:
            await client.create_collection(
                collection_name=index,
                vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE),
            )
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # created meanwhile by a concurrent first upsert
                raise


class _translated:
    def __init__(self, index: str, endpoint: str, forget: set[str] | None = None) -> None:
        self._index = index
        self._endpoint = endpoint
        self._forget = forget

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if exc is None:
            return
        if self._forget is not None:
            # Deleted behind our back, perhaps: the next upsert checks and creates it again.
            self._forget.discard(self._index)
        if isinstance(exc, ProviderError):
            return
        from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, ResourceExhaustedResponse):
            raise from_status(
                NAME,
                LABEL,
                429,
                exc.message,
                key_setting=QDRANT_API_KEY,
                retry_after=float(exc.retry_after_s),
            ) from None
        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code or 500
            message = _qdrant_message(exc.content)
            if status == 404:
                raise ProviderBadRequest(
                    f"Qdrant collection '{self._index}' does not exist: a vector_upsert creates it",
                    provider=NAME,
                    status_code=404,
                ) from None
            raise from_status(
                NAME,
                LABEL,
                status,
                message,
                key_setting=QDRANT_API_KEY,
                retry_after=parse_retry_after(exc.headers.get("retry-after")),
            ) from None
        if isinstance(exc, ResponseHandlingException):
            import httpx

            if isinstance(exc.source, httpx.TransportError | OSError):
                raise unreachable(NAME, LABEL, self._endpoint) from None
            raise ProviderInvalidResponse(
                "Qdrant answered with something that is not a valid response", provider=NAME
            ) from None
        if isinstance(exc, OSError | TimeoutError):
            raise unreachable(NAME, LABEL, self._endpoint) from None


def _qdrant_message(content: bytes) -> str:
    import json

    try:
        body = json.loads(content)
    except ValueError:
        return content.decode(errors="replace")
    status = body.get("status") if isinstance(body, dict) else None
    if isinstance(status, dict) and isinstance(status.get("error"), str):
        return status["error"]
    return content.decode(errors="replace")
