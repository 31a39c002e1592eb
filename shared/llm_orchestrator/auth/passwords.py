"""Password hashing with argon2id, at the cost the settings give.

Hashing and verifying run in a worker thread: at the default cost one takes about a quarter
of a second of CPU, and on the event loop it would hold every other request of the process
for that long (argon2's C code releases the GIL, so logins also use the second core).
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 8

# OWASP's smallest argon2id configuration is 7 MiB of memory over 5 passes; its others trade
# memory for passes at about the same product (19 MiB × 2, 12 MiB × 3, 9 MiB × 4).
MIN_MEMORY_KIB = 7 * 1024
MIN_MEMORY_TIMES_PASSES_KIB = MIN_MEMORY_KIB * 5


class Passwords:
    """Hashes new passwords at one argon2id cost; verifies a hash at the cost it records, so
    changing the cost never locks anyone out."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4):
        if memory_kib < MIN_MEMORY_KIB or memory_kib * time_cost < MIN_MEMORY_TIMES_PASSES_KIB:
            raise ValueError("argon2id cost below OWASP's minimum (7 MiB × 5 passes)")
        # The library's defaults are RFC 9106's low-memory profile: t=3, m=64 MiB, p=4.
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches. With no hash (an unknown user) a decoy made at the
        current cost is verified instead, so both failures cost the same time."""
        if password_hash is None and self._decoy is None:
            self._decoy = await self.hash("decoy password that never matches")
        return await asyncio.to_thread(self._matches, password_hash or self._decoy, password) and (
            password_hash is not None
        )

    def _matches(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or "", password)
        except (VerificationError, InvalidHashError):
            return False
