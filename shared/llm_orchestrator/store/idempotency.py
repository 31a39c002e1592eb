"""Idempotency keys: the first answer to a (caller, key) pair, kept for a replay window.

A key is claimed before the work starts, so two concurrent requests with the same key
cannot both start an execution: exactly one ``INSERT … ON CONFLICT`` wins the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.errors import Conflict
from llm_orchestrator.store.db import Database


@dataclass(frozen=True)
class StoredRequest:
    request_hash: str
    execution_id: str | None
    """Set once the first request has started its execution."""
    status_code: int | None
    """None while the first request is still being answered."""
    response: dict[str, Any] | None
    created_at: datetime


class IdempotencyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(
        self, owner_id: str, key: str, request_hash: str, *, now: datetime, ttl: timedelta
    ) -> StoredRequest | None:
        """Take the key for this request (None), or return the earlier request that holds it.

        A key older than ``ttl`` is free again: the upsert takes it over in place. The
        caller's other expired keys are swept on the way, so the table holds about one
        window of keys per caller without a scheduler.
        """
        expired_before = now - ttl
        for _ in range(3):
            async with self._db.transaction() as conn:
                await conn.execute(
                    "DELETE FROM idempotency_keys"
                    " WHERE owner_id = %s AND created_at < %s AND key <> %s",
                    (owner_id, expired_before, key),
                )
                cur = await conn.execute(
                    "INSERT INTO idempotency_keys (owner_id, key, request_hash, created_at)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (owner_id, key) DO UPDATE"
                    " SET request_hash = EXCLUDED.request_hash, execution_id = NULL,"
                    " status_code = NULL, response = NULL, created_at = EXCLUDED.created_at"
                    " WHERE idempotency_keys.created_at < %s"
                    " RETURNING owner_id",
                    (owner_id, key, request_hash, now, expired_before),
                )
                if await cur.fetchone() is not None:
                    return None
                cur = await conn.execute(
                    "SELECT request_hash, execution_id, status_code, response, created_at"
                    " FROM idempotency_keys WHERE owner_id = %s AND key = %s",
                    (owner_id, key),
                )
                row = await cur.fetchone()
            if row is not None:
                return StoredRequest(**row)
            # Released between the two statements by a request that failed: claim again.
        raise Conflict("Idempotency-Key is in use by concurrent requests; retry shortly")

    async def attach_execution(self, owner_id: str, key: str, execution_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET execution_id = %s WHERE owner_id = %s AND key = %s",
                (execution_id, owner_id, key),
            )

    async def complete(
        self, owner_id: str, key: str, status_code: int, response: dict[str, Any]
    ) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET status_code = %s, response = %s"
                " WHERE owner_id = %s AND key = %s AND status_code IS NULL",
                (status_code, Jsonb(response), owner_id, key),
            )

    async def release(self, owner_id: str, key: str) -> None:
        """Forget a claim that started nothing, so the client may retry with the same key."""
        async with self._db.connection() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys"
                " WHERE owner_id = %s AND key = %s AND execution_id IS NULL",
                (owner_id, key),
            )
