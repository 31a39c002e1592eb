"""Users: the accounts that own workflows, executions and API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_orchestrator.store.db import Database, fetch_page


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


def _user(row: dict[str, Any]) -> User:
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
        return _user(row)

    async def get(self, user_id: str) -> User | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM users WHERE id = %s", (user_id,))
            row = await cur.fetchone()
        return _user(row) if row else None

    async def get_in_session(self, user_id: str, session_id: uuid.UUID) -> tuple[User | None, bool]:
        """The user and whether their login session (refresh family) has been revoked.

        One round trip: every request authenticated by an access token pays for this, so the
        revocation check rides on the user lookup rather than adding a query. A family is
        revoked as soon as any of its tokens is (logout and reuse mark them all).
        """
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT u.*, EXISTS (SELECT 1 FROM refresh_tokens r"
                " WHERE r.family_id = %s AND r.revoked_at IS NOT NULL) AS session_revoked"
                " FROM users u WHERE u.id = %s",
                (session_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None, False
        return _user(row), bool(row["session_revoked"])

    async def get_by_username(self, username: str) -> User | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM users WHERE username = %s", (username,))
            row = await cur.fetchone()
        return _user(row) if row else None

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn, source="users", order_by="created_at, id", limit=limit, offset=offset
            )
        return [_user(r) for r in rows], total

    async def record_login(self, user_id: str, when: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute("UPDATE users SET last_login = %s WHERE id = %s", (when, user_id))
