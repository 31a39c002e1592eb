"""Pinecone through the ``pinecone`` SDK (async client, REST).

Settings: ``PINECONE_API_KEY`` (required) and ``PINECONE_CONTROLLER_HOST`` (the control
plane, default ``https://api.pinecone.io``). Creating a Pinecone index is the user's
decision (it is billed, and sized by cloud and region): upsert and search into an index that
does not exist fail with an error saying so. Each index is described once per credential
set, which yields its data-plane host, dimension and metric; all three are cached.

``namespace`` is Pinecone's own namespace (none = the default namespace ``""``). Pinecone
metadata is flat, so a record's metadata is the document's metadata plus ``text`` (the
document text), and a metadata key ``text`` is refused. ``filter`` becomes ``$eq``
conditions. Indexes using the ``euclidean`` metric are refused: their scores fall as
similarity rises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from llm_orchestrator.vectorstores.errors import from_status, not_configured, unreachable

if TYPE_CHECKING:
    from pinecone import AsyncPinecone
    from pinecone.async_client.async_index import AsyncIndex

__all__ = ["PINECONE_API_KEY", "PINECONE_CONTROLLER_HOST", "PineconeStore", "TEXT_KEY"]

NAME = "pinecone"
LABEL = "Pinecone"
PINECONE_API_KEY = "PINECONE_API_KEY"
PINECONE_CONTROLLER_HOST = "PINECONE_CONTROLLER_HOST"
DEFAULT_CONTROLLER_HOST = "https://api.pinecone.io"
TEXT_KEY = "text"
UPSERT_BATCH = 100
SIMILARITY_METRICS = frozenset({"cosine", "dotproduct"})


@dataclass
class _IndexHandle:
    data: AsyncIndex
    dimension: int | None
    metric: str | None


@dataclass
class _Account:
    control: AsyncPinecone
    endpoint: str
    indexes: dict[str, _IndexHandle]
    lock: asyncio.Lock


class PineconeStore:
    def __init__(self, settings: SettingResolver, *, timeout_seconds: float) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._accounts: dict[str, _Account] = {}

    async def upsert(
        self, index: str, records: Sequence[VectorRecord], *, namespace: str | None
    ) -> list[str]:
        for record in records:
            if TEXT_KEY in record.metadata:
                raise ProviderBadRequest(
                    f"Pinecone metadata key '{TEXT_KEY}' is reserved for the document text"
                    f" (document '{record.id}')",
                    provider=NAME,
                )
        account = await self._account()
        with _translated(index, account.endpoint):
            handle = await self._index(account, index)
            _check_dimension(index, handle, len(records[0].vector))
            for start in range(0, len(records), UPSERT_BATCH):
                batch = records[start : start + UPSERT_BATCH]
                await handle.data.upsert(
                    vectors=[
                        {
                            "id": record.id,
                            "values": record.vector,
                            "metadata": {**record.metadata, TEXT_KEY: record.text},
                        }
                        for record in batch
                    ],
                    namespace=namespace or "",
                    show_progress=False,
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
        account = await self._account()
        conditions = [{key: {"$eq": value}} for key, value in (filter or {}).items()]
        expression: dict[str, Any] | None = (
            None
            if not conditions
            else conditions[0]
            if len(conditions) == 1
            else {"$and": conditions}
        )
        with _translated(index, account.endpoint):
            handle = await self._index(account, index)
            _check_dimension(index, handle, len(vector))
            answer = await handle.data.query(
                vector=list(vector),
                top_k=top_k,
                namespace=namespace or "",
                filter=expression,
                include_metadata=True,
            )
        matches = []
        for match in answer.matches:
            metadata = dict(match.metadata or {})
            text = metadata.pop(TEXT_KEY, "")
            matches.append(
                VectorMatch(
                    id=str(match.id),
                    score=float(match.score or 0.0),
                    text=str(text),
                    metadata=metadata,
                )
            )
        return matches

    async def aclose(self) -> None:
        accounts, self._accounts = self._accounts, {}
        for account in accounts.values():
            for handle in account.indexes.values():
                await handle.data.close()
            await account.control.close()

    async def _account(self) -> _Account:
        found = await self._settings.resolve([PINECONE_API_KEY, PINECONE_CONTROLLER_HOST])
        api_key = found.get(PINECONE_API_KEY)
        if api_key is None:
            raise not_configured(NAME, LABEL, PINECONE_API_KEY)
        host = found.get(PINECONE_CONTROLLER_HOST) or DEFAULT_CONTROLLER_HOST
        key = credential_key(api_key, host)
        account = self._accounts.get(key)
        if account is None:
            from pinecone import AsyncPinecone
            from pinecone._internal.config import RetryConfig

            control = AsyncPinecone(
                api_key=api_key,
                host=host,
                timeout=self._timeout,
                # The state machine's Retry owns retrying: one call per attempt.
                retry_config=RetryConfig(max_retries=0),
            )
            account = _Account(control, public_endpoint(host), {}, asyncio.Lock())
            self._accounts[key] = account
        return account

    async def _index(self, account: _Account, index: str) -> _IndexHandle:
        handle = account.indexes.get(index)
        if handle is not None:
            return handle
        async with account.lock:
            handle = account.indexes.get(index)
            if handle is None:
                described = await account.control.indexes.describe(index)
                if not described.host:
                    raise ProviderBadRequest(
                        f"Pinecone index '{index}' has no host yet: it is still initializing",
                        provider=NAME,
                    )
                dimension, metric = _dense_field(described)
                if metric is not None and metric not in SIMILARITY_METRICS:
                    raise ProviderBadRequest(
                        f"Pinecone index '{index}' uses the '{metric}' metric; vector steps"
                        " need cosine (or dotproduct over normalised vectors)",
                        provider=NAME,
                    )
                data = _without_retries(await account.control.index(host=described.host))
                handle = _IndexHandle(data, dimension, metric)
                account.indexes[index] = handle
        return handle


def _without_retries(data: AsyncIndex) -> AsyncIndex:
    """The SDK gives a data-plane client no retry setting (it retries 429/5xx three times);
    swap in its HTTP client built with retries off, before its first request opens it. The
    state machine's Retry owns retrying, so a 429 costs one call per attempt."""
    from dataclasses import replace

    from pinecone._internal.config import RetryConfig
    from pinecone._internal.constants import DATA_PLANE_API_VERSION
    from pinecone._internal.http_client import AsyncHTTPClient

    config = replace(data._config, retry_config=RetryConfig(max_retries=0))
    data._http = AsyncHTTPClient(config, DATA_PLANE_API_VERSION)
    return data


def _dense_field(described: Any) -> tuple[int | None, str | None]:
    schema = getattr(described, "schema", None)
    for field in (getattr(schema, "fields", None) or {}).values():
        dimension = getattr(field, "dimension", None)
        if isinstance(dimension, int):
            return dimension, getattr(field, "metric", None)
    return None, None


def _check_dimension(index: str, handle: _IndexHandle, got: int) -> None:
    if handle.dimension is not None and handle.dimension != got:
        raise ProviderBadRequest(
            f"Pinecone index '{index}' holds {handle.dimension}-dimension vectors;"
            f" got {got} dimensions",
            provider=NAME,
        )


class _translated:
    def __init__(self, index: str, endpoint: str) -> None:
        self._index = index
        self._endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if exc is None or isinstance(exc, ProviderError):
            return
        from pinecone.errors import (
            ApiError,
            NotFoundError,
            PineconeConnectionError,
            PineconeTimeoutError,
            RateLimitError,
            ResponseParsingError,
        )

        if isinstance(exc, NotFoundError):
            raise ProviderBadRequest(
                f"Pinecone index '{self._index}' does not exist: create it in Pinecone"
                " (metric cosine, the embedding model's dimension); vector_upsert does not"
                " create Pinecone indexes",
                provider=NAME,
                status_code=404,
            ) from None
        if isinstance(exc, ApiError):
            retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
            raise from_status(
                NAME,
                LABEL,
                exc.status_code,
                exc.message or "",
                key_setting=PINECONE_API_KEY,
                retry_after=retry_after,
            ) from None
        if isinstance(exc, PineconeConnectionError | PineconeTimeoutError | OSError):
            raise unreachable(NAME, LABEL, self._endpoint) from None
        if isinstance(exc, ResponseParsingError):
            raise ProviderInvalidResponse(
                "Pinecone answered with something that is not a valid response", provider=NAME
            ) from None
