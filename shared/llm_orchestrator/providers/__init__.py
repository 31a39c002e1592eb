"""LLM and embedding providers behind provider-neutral protocols.

Importing this package never imports a vendor SDK; each adapter imports its own on
first use.
"""

from .anthropic_provider import AnthropicProvider
from .base import (
    ChatRequest,
    ChatResult,
    ChatTurn,
    CredentialNames,
    CredentialResolver,
    EmbeddingProvider,
    EmbedRequest,
    EmbedResult,
    EnvCredentialResolver,
    FallbackCredentialResolver,
    LLMProvider,
    ProviderCredentials,
    StructuredOutput,
    credential_names,
)
from .cohere_provider import CohereProvider
from .errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderInvalidResponse,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderUnavailable,
    StructuredOutputInvalid,
    UnsupportedProvider,
)
from .openai_provider import OpenAIProvider
from .registry import DEFAULT_FACTORIES, ProviderFactory, ProviderRegistry

__all__ = [
    "DEFAULT_FACTORIES",
    "AnthropicProvider",
    "ChatRequest",
    "ChatResult",
    "ChatTurn",
    "CohereProvider",
    "CredentialNames",
    "CredentialResolver",
    "EmbedRequest",
    "EmbedResult",
    "EmbeddingProvider",
    "EnvCredentialResolver",
    "FallbackCredentialResolver",
    "LLMProvider",
    "OpenAIProvider",
    "ProviderAuthError",
    "ProviderBadRequest",
    "ProviderCredentials",
    "ProviderError",
    "ProviderFactory",
    "ProviderInvalidResponse",
    "ProviderQuotaExceeded",
    "ProviderRateLimited",
    "ProviderRegistry",
    "ProviderUnavailable",
    "StructuredOutput",
    "StructuredOutputInvalid",
    "UnsupportedProvider",
    "credential_names",
]
