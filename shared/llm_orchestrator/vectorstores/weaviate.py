"""Weaviate through ``weaviate-client`` v4 (REST for the schema, gRPC for data).

Settings: ``WEAVIATE_URL`` (required, the REST endpoint, e.g. ``http://host:8080``),
``WEAVIATE_GRPC_URL`` (a URL too, e.g. ``http://host:50051``; default: the REST host, port
50051, same scheme) and ``WEAVIATE_API_KEY``.

An index is a collection named by :func:`collection_name` (Weaviate wants a capitalised
GraphQL name), created on the first upsert with self-provided vectors (cosine) and the
properties ``text`` (the document text), ``doc_id``, ``namespace`` and ``metadata_json``
(the metadata as JSON, returned by searches). Object ids are ``uuid5(namespace + id)``.
Each scalar metadata value whose key is letters, digits and ``_`` is also stored as the
property ``meta_<key>`` so that ``filter`` can compare it (Weaviate's auto-schema types
it; text equality follows the property's tokenization). ``namespace`` is a property
(``field`` tokenization) that every search filters on (none = ``""``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from llm_orchestrator.providers.errors import (
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
)
from llm_orchestrator.vectorstores.base import (
    FilterValue,
    SettingResolver,
    VectorMatch,
    VectorRecord,
    credential_key,
    public_endpoint,
)
from llm_orchestrator.vectorstores.errors import from_status, not_configured, unreachable

if TYPE_CHECKING:
    from weaviate import WeaviateAsyncClient

__all__ = [
    "WEAVIATE_API_KEY",
    "WEAVIATE_GRPC_URL",
    "WEAVIATE_URL",
    "WeaviateStore",
    "collection_name",
    "object_id",
]

NAME = "weaviate"
LABEL = "Weaviate"
WEAVIATE_URL = "WEAVIATE_URL"
WEAVIATE_GRPC_URL = "WEAVIATE_GRPC_URL"
WEAVIATE_API_KEY = "WEAVIATE_API_KEY"
DEFAULT_GRPC_PORT = 50051
OBJECT_NAMESPACE = uuid.UUID("0b6f5c7e-2d1a-4e8f-9c3b-5a7d1e2f4c60")
FILTERABLE_KEY = re.compile(r"^[A-Za-z0-9_]{1,200}$")
RETURNED = ["doc_id", "text", "metadata_json"]
T = TypeVar("T")


def collection_name(index: str) -> str:
    """``<Slug>_<8 hex digits of the SHA-256 of the index name>``: letters, digits and
    ``_`` of the name (others become ``_``), capitalised, ``I`` prefixed when it would not
    start with a letter; the digest keeps ``KB`` and ``kb`` apart."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", index).strip("_")[:60]
    if not slug or not slug[0].isalpha():
        slug = "I" + slug
    digest = hashlib.sha256(index.encode()).hexdigest()[:8]
    return f"{slug[0].upper()}{slug[1:]}_{digest}"


def object_id(namespace: str, document_id: str) -> str:
    return str(uuid.uuid5(OBJECT_NAMESPACE, f"{namespace}\x00{document_id}"))


@dataclass
class _Connection:
    client: WeaviateAsyncClient
    endpoint: str
    known: set[str]


class WeaviateStore:
    def __init__(self, settings: SettingResolver, *, timeout_seconds: float) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._connections: dict[str, _Connection] = {}
        self._lock = asyncio.Lock()

    async def upsert(
        self, index: str, records: Sequence[VectorRecord], *, namespace: str | None
    ) -> list[str]:
        from weaviate.classes.data import DataObject

        space = namespace or ""
        name = collection_name(index)
        connection = await self._connection()
        with _translated(index, connection.endpoint, forget=connection.known):
            if name not in connection.known:
                await self._bounded(self._ensure_collection(connection.client, name))
                connection.known.add(name)
            objects = [
                DataObject(
                    uuid=object_id(space, record.id),
                    vector=record.vector,
                    properties={
                        "doc_id": record.id,
                        "text": record.text,
                        "namespace": space,
                        "metadata_json": json.dumps(record.metadata, ensure_ascii=False),
                        **_filterable(record.metadata),
                    },
                )
                for record in records
            ]
            collection = connection.client.collections.get(name)
            result = await self._bounded(collection.data.insert_many(objects))
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise ProviderBadRequest(
                    f"Weaviate refused {len(result.errors)} of {len(records)} objects:"
                    f" {first.message}",
                    provider=NAME,
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
        from weaviate.classes.query import Filter, MetadataQuery

        conditions = [Filter.by_property("namespace").equal(namespace or "")]
        for key, value in (filter or {}).items():
            if not FILTERABLE_KEY.match(key):
                raise ProviderBadRequest(
                    f"Weaviate filters only metadata keys of letters, digits and '_' (got {key!r})",
                    provider=NAME,
                )
            conditions.append(Filter.by_property(f"meta_{key}").equal(value))
        connection = await self._connection()
        name = collection_name(index)
        with _translated(index, connection.endpoint):
            if name not in connection.known:
                if not await self._bounded(connection.client.collections.exists(name)):
                    raise ProviderBadRequest(
                        f"Weaviate collection for index '{index}' ({name}) does not exist:"
                        " a vector_upsert creates it",
                        provider=NAME,
                        status_code=404,
                    )
                connection.known.add(name)
            collection = connection.client.collections.get(name)
            answer = await self._bounded(
                collection.query.near_vector(
                    near_vector=list(vector),
                    limit=top_k,
                    filters=Filter.all_of(conditions) if len(conditions) > 1 else conditions[0],
                    return_properties=RETURNED,
                    return_metadata=MetadataQuery(distance=True),
                )
            )
        matches = []
        for obj in answer.objects:
            properties = obj.properties
            distance = obj.metadata.distance if obj.metadata.distance is not None else 1.0
            try:
                metadata = json.loads(str(properties.get("metadata_json") or "{}"))
            except ValueError:
                metadata = {}
            matches.append(
                VectorMatch(
                    id=str(properties.get("doc_id") or obj.uuid),
                    # Cosine similarity; rounding must not push it past 1.
                    score=max(-1.0, min(1.0, 1.0 - float(distance))),
                    text=str(properties.get("text") or ""),
                    metadata=metadata if isinstance(metadata, dict) else {},
                )
            )
        return matches

    async def aclose(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            await connection.client.close()

    async def _bounded(self, call: Awaitable[T]) -> T:
        # The client retries an UNAVAILABLE gRPC call itself, for up to a minute; one call
        # is one attempt of the state machine's Retry, so it gets the configured bound.
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation
        # that lands as the call completes.
        async with asyncio.timeout(self._timeout):
            return await call

    async def _connection(self) -> _Connection:
        found = await self._settings.resolve([WEAVIATE_URL, WEAVIATE_GRPC_URL, WEAVIATE_API_KEY])
        url = found.get(WEAVIATE_URL)
        if url is None:
            raise not_configured(NAME, LABEL, WEAVIATE_URL)
        grpc_url = found.get(WEAVIATE_GRPC_URL)
        api_key = found.get(WEAVIATE_API_KEY)
        key = credential_key(url, grpc_url, api_key)
        connection = self._connections.get(key)
        if connection is not None:
            return connection
        async with self._lock:
            connection = self._connections.get(key)
            if connection is None:
                endpoint = public_endpoint(url)
                client = _client(url, grpc_url, api_key, self._timeout)
                with _translated("", endpoint):
                    try:
                        await self._bounded(client.connect())
                    except BaseException:
                        await client.close()
                        raise
                connection = _Connection(client, endpoint, set())
                self._connections[key] = connection
        return connection

    async def _ensure_collection(self, client: WeaviateAsyncClient, name: str) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization
        from weaviate.exceptions import UnexpectedStatusCodeError

        if await client.collections.exists(name):
            return
        try:
            await client.collections.create(
                name,
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=_cosine())
                ),
                properties=[
                    Property(name="text", data_type=DataType.TEXT),
                    Property(
                        name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD
                    ),
                    Property(
                        name="namespace", data_type=DataType.TEXT, tokenization=Tokenization.FIELD
                    ),
                    Property(
                        name="metadata_json", data_type=DataType.TEXT, skip_vectorization=True
                    ),
                ],
            )
        except UnexpectedStatusCodeError as exc:
            # Created meanwhile by a concurrent first upsert.
            if not (exc.status_code == 422 and "already exists" in exc.message):
                raise


def _cosine() -> Any:
    from weaviate.classes.config import VectorDistances

    return VectorDistances.COSINE


def _filterable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        f"meta_{key}": value
        for key, value in metadata.items()
        if FILTERABLE_KEY.match(key) and isinstance(value, str | int | float | bool)
    }


def _client(url: str, grpc_url: str | None, api_key: str | None, timeout: float) -> Any:
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    rest = urlsplit(url)
    secure = rest.scheme == "https"
    http_host = rest.hostname or "localhost"
    http_port = rest.port or (443 if secure else 80)
    if grpc_url:
        grpc = urlsplit(grpc_url)
        grpc_host = grpc.hostname or http_host
        grpc_secure = grpc.scheme == "https"
        grpc_port = grpc.port or DEFAULT_GRPC_PORT
    else:
        grpc_host, grpc_port, grpc_secure = http_host, DEFAULT_GRPC_PORT, secure
    return weaviate.use_async_with_custom(
        http_host=http_host,
        http_port=http_port,
        http_secure=secure,
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        grpc_secure=grpc_secure,
        auth_credentials=Auth.api_key(api_key) if api_key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=timeout, query=timeout, insert=timeout)
        ),
        # The health and version probes are extra round trips on every cold start.
        skip_init_checks=True,
    )


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
            self._forget.discard(collection_name(self._index))
        if isinstance(exc, ProviderError):
            return
        from weaviate.exceptions import (
            UnexpectedStatusCodeError,
            WeaviateBaseError,
            WeaviateConnectionError,
            WeaviateStartUpError,
        )

        if isinstance(exc, UnexpectedStatusCodeError):
            raise from_status(
                NAME, LABEL, exc.status_code, exc.message, key_setting=WEAVIATE_API_KEY
            ) from None
        code = _grpc_code(exc)
        if code is not None:
            raise _from_grpc(code, _grpc_details(exc)) from None
        if isinstance(exc, TimeoutError | WeaviateStartUpError | WeaviateConnectionError | OSError):
            raise unreachable(NAME, LABEL, self._endpoint) from None
        if isinstance(exc, WeaviateBaseError):
            raise ProviderUnavailable(
                f"Weaviate failed: {exc.message[:300]}", provider=NAME
            ) from None


def _grpc_code(exc: BaseException) -> str | None:
    """The gRPC status name behind a client error: the client raises its own exceptions
    from (or while handling) grpc's ``AioRpcError``."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        code = getattr(link, "code", None)
        if callable(code):
            try:
                return str(code().name)
            except Exception:  # noqa: BLE001 - not a grpc error after all
                return None
        link = link.__cause__ or link.__context__
    return None


def _grpc_details(exc: BaseException) -> str:
    link: BaseException | None = exc
    while link is not None:
        details = getattr(link, "details", None)
        if callable(details):
            return str(details() or "")
        link = link.__cause__ or link.__context__
    return str(exc)


_GRPC_STATUS = {
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 400,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DEADLINE_EXCEEDED": 504,
}


def _from_grpc(code: str, details: str) -> ProviderError:
    if code == "UNAVAILABLE":
        return ProviderUnavailable(f"Weaviate is unavailable: {details[:300]}", provider=NAME)
    return from_status(
        NAME, LABEL, _GRPC_STATUS.get(code, 500), details, key_setting=WEAVIATE_API_KEY
    )
