"""Provider-neutral requests, results and the protocols the step runner programs against.

Nothing here knows a vendor. Adapters (``openai_provider`` and later ones) implement
``LLMProvider`` / ``EmbeddingProvider``; credentials reach them only through a
``CredentialResolver``, so the domain never reads the environment itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChatRequest",
    "ChatResult",
    "ChatTurn",
    "CredentialNames",
    "CredentialResolver",
    "EmbedRequest",
    "EmbedResult",
    "EmbeddingProvider",
    "EnvCredentialResolver",
    "FallbackCredentialResolver",
    "LLMProvider",
    "ProviderCredentials",
    "StructuredOutput",
    "credential_names",
]


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """Ask for a JSON object matching ``schema`` through the provider's own mechanism
    (OpenAI ``response_format`` json_schema, an Anthropic tool forced by ``tool_choice``,
    Cohere's ``response_format`` json_object).

    ``name`` names the schema (or the tool): letters, digits, ``_`` and ``-``, at most 64.
    ``strict`` asks OpenAI to enforce the schema exactly; only a schema that meets strict
    mode's rules may set it (see :mod:`llm_orchestrator.steps.structured`).
    """

    name: str
    schema: Mapping[str, Any]
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A turn after the prompt: the model's earlier reply, and what the user said to it."""

    role: Literal["assistant", "user"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion: an optional system message, the user prompt, and the turns that
    followed it (``follow_up``, e.g. a reply that missed its schema and the correction)."""

    model: str
    prompt: str
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    output: StructuredOutput | None = None
    follow_up: tuple[ChatTurn, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    latency_ms: float
    structured: Any = None
    """The reply as a JSON value when the provider handed one back as such (an Anthropic
    ``tool_use`` block's ``input``); otherwise the JSON is in ``text``."""
    refusal: str | None = None
    """The model's refusal to answer, where the provider reports one apart (OpenAI)."""
    cut_off: bool = False
    """The reply stopped at the ``max_tokens`` limit rather than where the model ended it."""


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """Embed one text, or several in one call; results keep the input order.

    ``input_type`` is for providers whose models embed queries and documents differently
    (Cohere's ``search_query`` / ``search_document``); None lets the adapter choose from
    the input's shape. Providers without the notion ignore it.
    """

    model: str
    input: str | list[str]
    input_type: str | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]
    input_tokens: int
    model: str
    latency_ms: float


@runtime_checkable
class LLMProvider(Protocol):
    async def complete(self, request: ChatRequest, /) -> ChatResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    async def embed(self, request: EmbedRequest, /) -> EmbedResult: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderCredentials:
    """What an adapter needs to reach its provider. ``None`` means "not configured"."""

    # Kept out of repr so a logged or traced credentials object cannot leak the key.
    api_key: str | None = field(repr=False)
    base_url: str | None = None


class CredentialResolver(Protocol):
    async def resolve(self, provider: str, /) -> ProviderCredentials: ...


@dataclass(frozen=True, slots=True)
class CredentialNames:
    """The names a provider's settings go by, in the secrets store and the environment alike."""

    api_key: str
    base_url: str


_KNOWN_CREDENTIAL_NAMES: Mapping[str, CredentialNames] = {
    "openai": CredentialNames("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": CredentialNames("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    # Cohere's own SDK reads CO_API_KEY / CO_API_URL; using its names lets one environment
    # serve both that SDK and us.
    "cohere": CredentialNames("CO_API_KEY", "CO_API_URL"),
}


def credential_names(provider: str) -> CredentialNames:
    """The secret / environment variable names for ``provider``'s key and base URL."""
    known = _KNOWN_CREDENTIAL_NAMES.get(provider)
    if known is not None:
        return known
    prefix = provider.upper().replace("-", "_")
    return CredentialNames(f"{prefix}_API_KEY", f"{prefix}_BASE_URL")


def _setting(values: Mapping[str, str], name: str) -> str | None:
    # A blank value (``OPENAI_API_KEY=``) means unset, and a pasted key often carries a
    # trailing newline that the provider would reject as a wrong key.
    value = values.get(name, "").strip()
    return value or None


class EnvCredentialResolver:
    """Credentials from a mapping of environment variables (``OPENAI_API_KEY``, …).

    The mapping is injected, not read from ``os.environ`` here: the composition root
    decides which environment applies, and tests pass a plain dict.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    async def resolve(self, provider: str, /) -> ProviderCredentials:
        names = credential_names(provider)
        return ProviderCredentials(
            api_key=_setting(self._environ, names.api_key),
            base_url=_setting(self._environ, names.base_url),
        )


class FallbackCredentialResolver:
    """Asks each resolver in turn; for each field the first one that has a value wins.

    Per field rather than per resolver, so a key from the secrets store combines with a
    base URL that only the environment sets.
    """

    def __init__(self, *resolvers: CredentialResolver) -> None:
        self._resolvers = resolvers

    async def resolve(self, provider: str, /) -> ProviderCredentials:
        api_key: str | None = None
        base_url: str | None = None
        for resolver in self._resolvers:
            found = await resolver.resolve(provider)
            api_key = api_key or found.api_key
            base_url = base_url or found.base_url
            if api_key and base_url:
                break
        return ProviderCredentials(api_key=api_key, base_url=base_url)
