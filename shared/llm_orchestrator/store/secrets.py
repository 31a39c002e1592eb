"""Encrypted secrets (the ``db`` backend). Rows hold ciphertext only; encryption and the key
live in ``llm_orchestrator.secrets``, so nothing here ever sees a plaintext value."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from llm_orchestrator.store.db import Database
from llm_orchestrator.store.fence import SECRET_WRITTEN_CHANNEL

_UNEXPIRED = "(expires_at IS NULL OR expires_at > %s)"


class SecretRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(
        self, name: str, ciphertext: bytes, *, now: datetime, expires_at: datetime | None
    ) -> None:
        """Store or replace ``name``; a replacement takes the new expiry (None: never).

        The same statement tells every serving process (``SECRET_WRITTEN_CHANNEL``, delivered
        when it commits) to drop its cached value of ``name``."""
        async with self._db.connection() as conn:
            await conn.execute(
                "WITH written AS (INSERT INTO secrets (name, ciphertext, updated_at, expires_at)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext,"
                " updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at)"
                " SELECT pg_notify(%s, %s)",
                (name, ciphertext, now, expires_at, SECRET_WRITTEN_CHANNEL, name),
            )

    async def get_unexpired(
        self, names: Sequence[str], now: datetime
    ) -> dict[str, tuple[bytes, datetime | None]]:
        """Ciphertext and expiry of those of ``names`` that exist and have not expired, in
        one query."""
        if not names:
            return {}
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT name, ciphertext, expires_at FROM secrets"
                f" WHERE name = ANY(%s) AND {_UNEXPIRED}",
                (list(names), now),
            )
            rows = await cur.fetchall()
        return {row["name"]: (bytes(row["ciphertext"]), row["expires_at"]) for row in rows}

    async def list_names(self, now: datetime) -> list[str]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT name FROM secrets WHERE {_UNEXPIRED} ORDER BY name", (now,)
            )
            rows = await cur.fetchall()
        return [row["name"] for row in rows]
