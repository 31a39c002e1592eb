"""Provider name → adapter, as a workflow step names it (``"provider": "openai"``).

One adapter instance per name, shared by the ``llm`` and ``embedding`` lookups so both
use the same cached clients. A provider slots in by adding a factory to
``DEFAULT_FACTORIES``; its SDK stays unimported until the adapter's first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from .anthropic_provider import AnthropicProvider
from .base import CredentialResolver, EmbeddingProvider, LLMProvider
from .cohere_provider import CohereProvider
from .errors import UnsupportedProvider
from .openai_provider import DEFAULT_TIMEOUT_SECONDS, OpenAIProvider

__all__ = ["DEFAULT_FACTORIES", "ProviderFactory", "ProviderRegistry"]


class ProviderFactory(Protocol):
    def __call__(
        self, resolver: CredentialResolver, *, timeout_seconds: float
    ) -> LLMProvider | EmbeddingProvider: ...


DEFAULT_FACTORIES: Mapping[str, ProviderFactory] = MappingProxyType(
    {"openai": OpenAIProvider, "anthropic": AnthropicProvider, "cohere": CohereProvider}
)


class ProviderRegistry:
    """Builds adapters on first use and hands out the same one afterwards."""

    def __init__(
        self,
        resolver: CredentialResolver,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        factories: Mapping[str, ProviderFactory] | None = None,
    ) -> None:
        self._resolver = resolver
        self._timeout_seconds = timeout_seconds
        self._factories = dict(DEFAULT_FACTORIES if factories is None else factories)
        self._instances: dict[str, LLMProvider | EmbeddingProvider] = {}
        # What ``llm`` / ``embedding`` already checked: an ``isinstance`` against a
        # runtime-checkable protocol inspects every member, on every step otherwise.
        self._llms: dict[str, LLMProvider] = {}
        self._embedders: dict[str, EmbeddingProvider] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The provider names this build can serve, sorted."""
        return tuple(sorted(self._factories))

    def llm(self, name: str) -> LLMProvider:
        checked = self._llms.get(name)
        if checked is not None:
            return checked
        provider = self._instance(name)
        if not isinstance(provider, LLMProvider):
            raise UnsupportedProvider(
                f"provider '{name}' does not offer chat completions", provider=name
            )
        self._llms[name] = provider
        return provider

    def embedding(self, name: str) -> EmbeddingProvider:
        checked = self._embedders.get(name)
        if checked is not None:
            return checked
        provider = self._instance(name)
        if not isinstance(provider, EmbeddingProvider):
            raise UnsupportedProvider(f"provider '{name}' does not offer embeddings", provider=name)
        self._embedders[name] = provider
        return provider

    async def aclose(self) -> None:
        instances, self._instances = self._instances, {}
        self._llms, self._embedders = {}, {}
        for provider in instances.values():
            await provider.aclose()

    def _instance(self, name: str) -> LLMProvider | EmbeddingProvider:
        instance = self._instances.get(name)
        if instance is None:
            factory = self._factories.get(name)
            if factory is None:
                available = ", ".join(self.names) or "none"
                raise UnsupportedProvider(
                    f"provider '{name}' is not available in this build (available: {available})",
                    provider=name,
                )
            instance = factory(self._resolver, timeout_seconds=self._timeout_seconds)
            self._instances[name] = instance
        return instance
