"""Provider credentials from the secrets store, under the providers' own variable names."""

from __future__ import annotations

from collections.abc import Sequence

from llm_orchestrator.providers.base import ProviderCredentials, credential_names
from llm_orchestrator.secrets.base import SecretsStore


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
