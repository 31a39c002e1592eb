"""pgvector: the default vector database, needing no configuration.

With ``PGVECTOR_URL`` unset (neither a stored secret nor an environment variable), indexes
live in the orchestrator's own PostgreSQL, in the ``vectors`` schema that migration 0010
creates with the ``vector`` extension (the embedded PostgreSQL ships it). Set
``PGVECTOR_URL`` to a ``postgresql://`` URL to keep them in another database; the role it
names must be able to create the extension and schema there, or they must exist already.

``namespace`` is a column of every index table: searches see only their own namespace
(none given = the empty namespace).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import psycopg

from llm_orchestrator.errors import ServiceUnavailable, ValidationFailed
from llm_orchestrator.providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderUnavailable,
)
from llm_orchestrator.store.db import Database
from llm_orchestrator.store.vector_tables import (
    VectorDimensionMismatch,
    VectorIndexMissing,
    VectorTables,
)
from llm_orchestrator.vectorstores.base import (
    FilterValue,
    SettingResolver,
    VectorMatch,
    VectorRecord,
    credential_key,
)

__all__ = ["PGVECTOR_URL", "PgVectorStore"]

log = logging.getLogger(__name__)

NAME = "pgvector"
PGVECTOR_URL = "PGVECTOR_URL"
EXTERNAL_POOL_SIZE = 4
EXTERNAL_CONNECT_SECONDS = 10.0
"""How long a call waits for a connection to a PGVECTOR_URL database: three attempts of a
database that does not answer at all then fail the execution well within a minute. A
database that refuses connections fails each attempt at once (see ``_External``)."""


class PgVectorStore:
    def __init__(
        self,
        settings: SettingResolver,
        *,
        timeout_seconds: float,
        own_database: Database | None = None,
    ) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._own = VectorTables(own_database) if own_database is not None else None
        self._external: dict[str, _External] = {}

    async def upsert(
        self, index: str, records: Sequence[VectorRecord], *, namespace: str | None
    ) -> list[str]:
        tables, where, external = await self._tables()
        rows = [(r.id, r.vector, r.text, r.metadata) for r in records]
        with _translated(index, where, external):
            if external is not None and not external.reached:
                await external.probe()
            await tables.upsert(index, namespace or "", rows)
            if external is not None:
                external.reached = True
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
        tables, where, external = await self._tables()
        with _translated(index, where, external):
            if external is not None and not external.reached:
                await external.probe()
            rows = await tables.search(
                index, namespace or "", vector, top_k=top_k, filter=filter, ef_search=ef_search
            )
            if external is not None:
                external.reached = True
        return [VectorMatch(row.id, row.score, row.text, row.metadata) for row in rows]

    async def aclose(self) -> None:
        external, self._external = self._external, {}
        for entry in external.values():
            await entry.db.close()

    async def _tables(self) -> tuple[VectorTables, str, _External | None]:
        url = (await self._settings.resolve([PGVECTOR_URL])).get(PGVECTOR_URL)
        if url is None:
            if self._own is None:
                raise ProviderAuthError(
                    f"pgvector has no database: set {PGVECTOR_URL} (a stored secret or an"
                    " environment variable)",
                    provider=NAME,
                )
            return self._own, "the orchestrator's database", None
        key = credential_key(url)
        entry = self._external.get(key)
        if entry is None:
            wait = min(self._timeout, EXTERNAL_CONNECT_SECONDS)
            db = Database(
                url,
                min_size=0,
                max_size=EXTERNAL_POOL_SIZE,
                statement_timeout=self._timeout,
                pool_timeout=wait,
                background_pool_timeout=wait,
            )
            entry = _External(db, VectorTables(db, prepare_database=True), wait)
            self._external[key] = entry
        return entry.tables, f"the PostgreSQL named by {PGVECTOR_URL}", entry


class _External:
    """A ``PGVECTOR_URL`` database: its pool, its tables, and whether it was reached.

    The pool connects in the background and a caller waits for a connection until its
    timeout, however the attempts fail: a database that refuses connections (nothing
    listening, a wrong port) would cost every attempt of a step the whole wait. So until
    a call has succeeded, and again after a call lost the database, each call first
    connects once itself: a refused connection fails that call at once, a server that
    does not answer at all still fails it after ``connect_seconds``. Once reached, calls
    go straight to the pool.
    """

    def __init__(self, db: Database, tables: VectorTables, connect_seconds: float) -> None:
        self.db = db
        self.tables = tables
        self.reached = False
        self._connect_seconds = max(2, int(connect_seconds))

    async def probe(self) -> None:
        """Raises ``psycopg.OperationalError`` if the database cannot be connected to."""
        conn = await psycopg.AsyncConnection.connect(
            self.db.url, connect_timeout=self._connect_seconds, autocommit=True
        )
        await conn.close()


class _translated:
    """Database errors → the providers' errors; messages never carry the URL (it may hold
    a password). A failure to reach an external database sends its next call through
    ``_External.probe`` again."""

    def __init__(self, index: str, where: str, external: _External | None = None) -> None:
        self._index = index
        self._where = where
        self._external = external

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if exc is None:
            return
        if self._external is not None and isinstance(
            exc, ServiceUnavailable | psycopg.OperationalError
        ):
            self._external.reached = False
        if isinstance(exc, VectorIndexMissing):
            raise ProviderBadRequest(
                f"pgvector index '{self._index}' does not exist yet: a vector_upsert creates it",
                provider=NAME,
            ) from None
        if isinstance(exc, VectorDimensionMismatch):
            raise ProviderBadRequest(f"pgvector {exc}", provider=NAME) from None
        if isinstance(exc, ServiceUnavailable):
            raise ProviderUnavailable(
                f"pgvector could not reach {self._where}", provider=NAME
            ) from None
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            raise ProviderAuthError(
                f"pgvector was refused by {self._where}: {exc.diag.message_primary}",
                provider=NAME,
            ) from None
        if isinstance(exc, psycopg.errors.InvalidAuthorizationSpecification):
            raise ProviderAuthError(
                f"pgvector: {self._where} refused the credentials", provider=NAME
            ) from None
        if isinstance(exc, ValidationFailed | psycopg.DataError):
            raise ProviderBadRequest(
                f"pgvector refused the data: {getattr(exc, 'message', None) or exc}",
                provider=NAME,
            ) from None
        if isinstance(exc, psycopg.OperationalError):
            raise ProviderUnavailable(
                f"pgvector could not reach {self._where}", provider=NAME
            ) from None
        return
