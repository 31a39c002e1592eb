"""Provider credentials from the secrets store, under the providers' own variable names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from llm_orchestrator.redaction import register_secret
from llm_orchestrator.secrets.base import SecretsStore

if TYPE_CHECKING:
    # Types only: the API groups build the secrets store (RedactingSecretsStore) and must
    # not load the providers with it.
    from llm_orchestrator.providers.base import CredentialResolver, ProviderCredentials
    from llm_orchestrator.vectorstores.base import SettingResolver


class SecretsCredentialResolver:
    """A ``CredentialResolver`` over a ``SecretsStore``.

    Looks up ``credential_names(provider)`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, …), the
    same names the environment uses, so a secret stored under a variable's name overrides
    that variable when this resolver comes first in a ``FallbackCredentialResolver``.
    The store caches its reads and drops a name it writes, so a secret set or rotated
    through the API applies to this process's next call (other processes: within
    ``LLMO_SECRETS_CACHE_SECONDS``).
    """

    def __init__(self, store: SecretsStore) -> None:
        self._store = store

    async def resolve(self, provider: str, /) -> ProviderCredentials:
        from llm_orchestrator.providers.base import ProviderCredentials, credential_names

        names = credential_names(provider)
        found = await self._store.get_many([names.api_key, names.base_url])
        return ProviderCredentials(
            api_key=_usable(found.get(names.api_key)), base_url=_usable(found.get(names.base_url))
        )


def _usable(value: str | None) -> str | None:
    # The same rule as the environment resolver: a pasted key's trailing newline would make
    # the provider answer 401, and a blank value means "not set here".
    stripped = (value or "").strip()
    return stripped or None


class SecretsSettingResolver:
    """A vector database's settings (``QDRANT_URL``, ``PINECONE_API_KEY``, ``PGVECTOR_URL``,
    …) from the secrets store, under the same names as the environment variables; read
    through the store's cache like the provider credentials, so a search costs no secrets
    read and a setting stored through the API applies to the next call."""

    def __init__(self, store: SecretsStore) -> None:
        self._store = store

    async def resolve(self, names: Sequence[str], /) -> dict[str, str]:
        found = await self._store.get_many(list(names))
        usable = {name: _usable(found.get(name)) for name in names}
        return {name: value for name, value in usable.items() if value is not None}


class RedactingCredentialResolver:
    """Registers every credential it hands out (from the store or the environment) for
    redaction, so no log line, error message or stored state can carry it."""

    def __init__(self, inner: CredentialResolver) -> None:
        self._inner = inner

    async def resolve(self, provider: str, /) -> ProviderCredentials:
        found = await self._inner.resolve(provider)
        register_secret(found.api_key)
        register_secret(found.base_url)
        return found


class RedactingSettingResolver:
    """The same for vector databases' settings (``QDRANT_API_KEY``, ``PGVECTOR_URL``, …)."""

    def __init__(self, inner: SettingResolver) -> None:
        self._inner = inner

    async def resolve(self, names: Sequence[str], /) -> dict[str, str]:
        found = await self._inner.resolve(names)
        for value in found.values():
            register_secret(value)
        return found


class RedactingSecretsStore:
    """Any ``SecretsStore`` whose served values are registered for redaction on the way out."""

    def __init__(self, inner: SecretsStore) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return f"RedactingSecretsStore({self._inner!r})"

    @property
    def inner(self) -> SecretsStore:
        """The backend whose values this store registers."""
        return self._inner

    @property
    def backend(self) -> str:
        return self._inner.backend

    async def put(self, name: str, value: str, *, ttl: timedelta | None = None) -> None:
        await self._inner.put(name, value, ttl=ttl)
        register_secret(value)

    async def get(self, name: str) -> str | None:
        value = await self._inner.get(name)
        register_secret(value)
        return value

    async def get_many(self, names: Sequence[str]) -> dict[str, str]:
        found = await self._inner.get_many(names)
        for value in found.values():
            register_secret(value)
        return found

    async def names(self) -> list[str]:
        return await self._inner.names()
