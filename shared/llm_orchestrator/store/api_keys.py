"""API keys: stored as SHA-256 hashes; the raw key exists only in the create response."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_orchestrator.store.db import Database, Read, fetch_page
from llm_orchestrator.store.rate_limits import RateCharge
from llm_orchestrator.store.users import UserIdentity


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    user_id: str
    name: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyIdentity:
    """What authenticating a request needs of its API key: read fresh on every request."""

    id: uuid.UUID
    scopes: tuple[str, ...]


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        key_hash=row["key_hash"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class ApiKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        key_id: uuid.UUID,
        user_id: str,
        name: str,
        key_hash: str,
        scopes: list[str],
        expires_at: datetime | None,
    ) -> ApiKey:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (key_id, user_id, name, key_hash, scopes, expires_at),
            )
            row = await cur.fetchone()
        assert row is not None
        return _key(row)

    async def authenticate(
        self,
        key_hash: str,
        now: datetime,
        *,
        count: RateCharge | None = None,
        ride: Read[Any] | None = None,
    ) -> tuple[KeyIdentity, UserIdentity, list[int] | None, tuple[Any] | None] | None:
        """The live key with this hash and its owner, the key marked used, with ``count``
        this request counted against the key's limits at the owner's tier, and with
        ``ride`` the answer of that read (as a 1-tuple); None (nothing marked, counted or
        read) when no live key has this hash.

        One round trip, like a bearer token's (``UserRepository.get_in_session``): the key
        lookup, its ``last_used_at``, the owner, the rate-limit count and the request's own
        read (``ride``) go in one statement, so a revoked key, a changed role or tier, and
        the count are all read fresh on every request. Only the columns a request's caller
        needs are read (no hashes, no timestamps to parse), through ``Database.rows``.
        """
        params: dict[str, Any] = {"hash": key_hash, "now": now}
        hits_sql = "NULL::integer[]"
        if count is not None:
            hits_sql = count.table.hit_sql("'key:' || k.id::text", "u.tier")
            params.update(count.params())
        marked = (
            "WITH k AS (UPDATE api_keys SET last_used_at = %(now)s"
            " WHERE key_hash = %(hash)s AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > %(now)s) RETURNING id, user_id, scopes)"
        )
        found = (
            "SELECT k.id AS key_id, k.scopes AS key_scopes, u.id AS user_id, u.username,"
            f" u.roles, u.tier, {hits_sql} AS rate_hits FROM k JOIN users u ON u.id = k.user_id"
        )
        sql = f"{marked} {found}"
        if ride is not None:
            # The key's row once (materialized: the count is not repeated per row of the
            # ride), then the ride's rows beside it; no live key, no row, no ride.
            sql = f"{marked}, a AS MATERIALIZED ({found}) SELECT a.*, r.* FROM a{ride.lateral()}"
            params.update(ride.params)
        rows = await self._db.rows(sql, params)
        if not rows:
            return None
        key_id, scopes, user_id, username, roles, tier, hits = rows[0][:7]
        carried = None
        if ride is not None:
            carried = (ride.carried(rows, 7),)
        return (
            KeyIdentity(key_id, tuple(scopes)),
            UserIdentity(user_id, username, tuple(roles), tier),
            None if hits is None else list(hits),
            carried,
        )

    async def list_for_user(
        self, user_id: str, *, limit: int, offset: int
    ) -> tuple[list[ApiKey], int]:
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                source="api_keys",
                where="user_id = %s AND revoked_at IS NULL",
                params=(user_id,),
                order_by="created_at, id",
                limit=limit,
                offset=offset,
            )
        return [_key(r) for r in rows], total

    async def revoke(self, key_id: uuid.UUID, *, owner_id: str | None, now: datetime) -> bool:
        """Revoke a live key; ``owner_id`` None means any owner (admin). False if none."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = %s"
                " WHERE id = %s AND revoked_at IS NULL AND (%s::text IS NULL OR user_id = %s)"
                " RETURNING id",
                (now, key_id, owner_id, owner_id),
            )
            return await cur.fetchone() is not None

    async def count_active(self, now: datetime) -> int:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM api_keys"
                " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %s)",
                (now,),
            )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0
