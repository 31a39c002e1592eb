"""Users: the accounts that own workflows, executions and API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_orchestrator.store.db import Database, Read, fetch_page
from llm_orchestrator.store.rate_limits import RateCharge


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    tier: str
    created_at: datetime
    last_login: datetime | None


@dataclass(frozen=True)
class UserIdentity:
    """What authenticating a request needs of its user: read fresh on every request."""

    id: str
    username: str
    roles: tuple[str, ...]
    tier: str


def user_of(row: dict[str, Any]) -> User:
    """A ``users`` row (extra columns ignored) as a ``User``."""
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        password_hash=row["password_hash"],
        roles=tuple(row["roles"]),
        tier=row["tier"],
        created_at=row["created_at"],
        last_login=row["last_login"],
    )


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        user_id: str,
        username: str,
        email: str,
        password_hash: str,
        roles: list[str],
        tier: str,
    ) -> User:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO users (id, username, email, password_hash, roles, tier)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (user_id, username, email, password_hash, roles, tier),
            )
            row = await cur.fetchone()
        assert row is not None
        return user_of(row)

    async def get(self, user_id: str) -> User | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM users WHERE id = %s", (user_id,))
            row = await cur.fetchone()
        return user_of(row) if row else None

    async def get_in_session(
        self,
        user_id: str,
        session_id: uuid.UUID,
        *,
        count: tuple[str, RateCharge] | None = None,
        ride: Read[Any] | None = None,
    ) -> tuple[UserIdentity | None, bool, list[int] | None, tuple[Any] | None]:
        """The user, whether their login session (refresh family) has been revoked, with
        ``count`` (a rate-limit subject and charge) the request counted at the user's tier,
        and with ``ride`` the answer of that read (as a 1-tuple; None when not read).

        One round trip: every request authenticated by an access token pays for this, so the
        revocation check, the rate-limit count and the request's own read (``ride``) go with
        the user lookup rather than adding queries. A family is revoked as soon as any of
        its tokens is (logout and reuse mark them all). Nothing is counted, and nothing is
        read for ``ride``, for a missing user or a revoked session; the hits include this
        request (see ``store.rate_limits``). Only the columns a request's caller needs are
        read (no password hash, no timestamps to parse).
        """
        params: dict[str, Any] = {"user": user_id, "session": session_id}
        hits_sql = "NULL::integer[]"
        if count is not None:
            subject, charge = count
            hits_sql = charge.table.hit_sql("%(subject)s", "u.tier")
            params.update(subject=subject, **charge.params())
        sql = (
            "SELECT u.id, u.username, u.roles, u.tier, s.revoked AS session_revoked,"
            " CASE WHEN s.revoked THEN NULL ELSE " + hits_sql + " END AS rate_hits"
            " FROM users u CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM refresh_tokens r"
            " WHERE r.family_id = %(session)s AND r.revoked_at IS NOT NULL) AS revoked) s"
            " WHERE u.id = %(user)s"
        )
        if ride is not None:
            # The caller's row once (materialized: the count is not repeated per row of the
            # ride), then the ride's rows beside it. The ride runs only for a live session
            # ("never executed" in EXPLAIN ANALYZE when revoked).
            gated = ride.lateral(" WHERE NOT a.session_revoked")
            sql = f"WITH a AS MATERIALIZED ({sql}) SELECT a.*, r.* FROM a{gated}"
            params.update(ride.params)
        rows = await self._db.rows(sql, params)
        if not rows:
            return None, False, None, None
        user_id, username, roles, tier, revoked, hits = rows[0][:6]
        user = UserIdentity(user_id, username, tuple(roles), tier)
        carried = None
        if ride is not None and not revoked:
            carried = (ride.carried(rows, 6),)
        return user, bool(revoked), None if hits is None else list(hits), carried

    async def get_by_username(self, username: str) -> User | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM users WHERE username = %s", (username,))
            row = await cur.fetchone()
        return user_of(row) if row else None

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn, source="users", order_by="created_at, id", limit=limit, offset=offset
            )
        return [user_of(r) for r in rows], total

    async def record_login(self, user_id: str, when: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute("UPDATE users SET last_login = %s WHERE id = %s", (when, user_id))
