"""The ``db`` secrets backend: AES-GCM ciphertext in the ``secrets`` table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from llm_orchestrator.secrets.base import validate_secret
from llm_orchestrator.secrets.cache import Fetched, SecretCache
from llm_orchestrator.secrets.crypto import SecretCipher
from llm_orchestrator.store.secrets import SecretRepository

log = logging.getLogger(__name__)


class DbSecretsStore:
    """Secrets encrypted at rest in PostgreSQL, shared by every process and Lambda container.

    The key is fetched from ``key_source`` on first need, not at construction: building the
    runtime (a Lambda cold start, a health probe) reads no key file, and a deployment that
    stores no secrets needs no key at all. With a ``cache`` (``secrets/cache.py``), reads
    are served from it and a write through this store drops the name at once; without one,
    every read is a query.
    """

    backend = "db"

    def __init__(
        self,
        repository: SecretRepository,
        key_source: Callable[[], bytes],
        clock: Callable[[], datetime],
        cache: SecretCache | None = None,
    ) -> None:
        self._repository = repository
        self._cache = cache
        self._key_source = key_source
        self._clock = clock
        self._cipher: SecretCipher | None = None

    def __repr__(self) -> str:
        return "DbSecretsStore()"

    async def put(self, name: str, value: str, *, ttl: timedelta | None = None) -> None:
        validate_secret(name, value, ttl)
        now = self._clock()
        expires_at = now + ttl if ttl is not None else None
        ciphertext = self._get_cipher().encrypt(name, value)
        if self._cache is not None:
            self._cache.drop(name)
        try:
            await self._repository.upsert(name, ciphertext, now=now, expires_at=expires_at)
        finally:
            # Whatever happens, this process must not serve what it cached before the write.
            if self._cache is not None:
                self._cache.drop(name)
        log.info(
            "stored secret %s (expires %s)", name, expires_at.isoformat() if expires_at else "never"
        )

    async def get(self, name: str) -> str | None:
        return (await self.get_many([name])).get(name)

    async def get_many(self, names: Sequence[str]) -> dict[str, str]:
        if self._cache is not None:
            return await self._cache.read_through(names, self._fetch, self._clock())
        return {name: value for name, (value, _) in (await self._fetch(list(names))).items()}

    async def _fetch(self, names: list[str]) -> Fetched:
        rows = await self._repository.get_unexpired(names, self._clock())
        if not rows:
            return {}
        cipher = self._get_cipher()
        return {
            name: (cipher.decrypt(name, blob), expires_at)
            for name, (blob, expires_at) in rows.items()
        }

    async def names(self) -> list[str]:
        return await self._repository.list_names(self._clock())

    def _get_cipher(self) -> SecretCipher:
        if self._cipher is None:
            self._cipher = SecretCipher(self._key_source())
        return self._cipher
