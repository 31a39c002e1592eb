"""Secrets at rest: AES-GCM sealing bound to the name, key handling, credential lookup."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.errors import ValidationFailed
from llm_orchestrator.providers.base import EnvCredentialResolver, FallbackCredentialResolver
from llm_orchestrator.runtime import resolve_secrets_key
from llm_orchestrator.secrets import (
    SecretCipher,
    SecretDecryptionError,
    SecretsCredentialResolver,
    SecretsKeyError,
    generate_key,
    parse_key,
    validate_secret,
)

VALUE = "sk-unit-secret-value-0123456789"


@pytest.fixture
def cipher() -> SecretCipher:
    return SecretCipher(parse_key(generate_key()))


def test_a_sealed_value_opens_under_its_own_name(cipher: SecretCipher) -> None:
    blob = cipher.encrypt("OPENAI_API_KEY", VALUE)

    assert cipher.decrypt("OPENAI_API_KEY", blob) == VALUE


def test_the_ciphertext_never_contains_the_value_and_never_repeats(cipher: SecretCipher) -> None:
    first = cipher.encrypt("OPENAI_API_KEY", VALUE)
    second = cipher.encrypt("OPENAI_API_KEY", VALUE)

    assert VALUE.encode() not in first
    assert first != second  # a fresh nonce each time


def test_a_ciphertext_moved_under_another_name_does_not_open(cipher: SecretCipher) -> None:
    blob = cipher.encrypt("CHEAP_TEST_KEY", VALUE)

    with pytest.raises(SecretDecryptionError):
        cipher.decrypt("OPENAI_API_KEY", blob)


def test_a_tampered_ciphertext_does_not_open(cipher: SecretCipher) -> None:
    blob = bytearray(cipher.encrypt("OPENAI_API_KEY", VALUE))
    blob[-1] ^= 0x01

    with pytest.raises(SecretDecryptionError):
        cipher.decrypt("OPENAI_API_KEY", bytes(blob))


def test_another_key_cannot_open_it_and_the_error_shows_no_value(cipher: SecretCipher) -> None:
    blob = cipher.encrypt("OPENAI_API_KEY", VALUE)
    other = SecretCipher(parse_key(generate_key()))

    with pytest.raises(SecretDecryptionError) as raised:
        other.decrypt("OPENAI_API_KEY", blob)

    assert VALUE not in str(raised.value)


def test_a_fernet_style_key_is_accepted() -> None:
    fernet_style = base64.urlsafe_b64encode(os.urandom(32)).decode()

    assert len(parse_key(fernet_style)) == 32
    assert len(parse_key(fernet_style.rstrip("="))) == 32


@pytest.mark.parametrize("text", ["", "not base64 at all!!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(SecretsKeyError) as raised:
        parse_key(text)

    if text:
        assert text not in str(raised.value)


def test_the_local_key_is_generated_once_into_the_data_dir_owner_only(tmp_path: Path) -> None:
    settings = Settings(environment="local", data_dir=tmp_path, secrets_key=None)

    first = resolve_secrets_key(settings)
    second = resolve_secrets_key(settings)

    key_file = tmp_path / "secrets.key"
    assert first == second and len(first) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_configured_key_wins_over_the_data_dir(tmp_path: Path) -> None:
    key = generate_key()
    settings = Settings(environment="local", data_dir=tmp_path, secrets_key=key)

    assert resolve_secrets_key(settings) == parse_key(key)
    assert not (tmp_path / "secrets.key").exists()


def test_outside_local_a_key_is_required(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path, secrets_key=None)

    with pytest.raises(SecretsKeyError, match="LLMO_SECRETS_KEY"):
        resolve_secrets_key(settings)
    assert not (tmp_path / "secrets.key").exists()


@pytest.mark.parametrize(
    ("name", "value", "ttl", "field"),
    [
        ("1STARTS_WITH_DIGIT", VALUE, None, "key"),
        ("HAS-DASH", VALUE, None, "key"),
        ("A" * 129, VALUE, None, "key"),
        ("OPENAI_API_KEY", "   ", None, "value"),
        ("OPENAI_API_KEY", VALUE, timedelta(0), "ttl_seconds"),
        ("OPENAI_API_KEY", VALUE, timedelta(days=366), "ttl_seconds"),
    ],
)
def test_invalid_secrets_are_refused_per_field(
    name: str, value: str, ttl: timedelta | None, field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        validate_secret(name, value, ttl)

    assert [e.field for e in raised.value.errors] == [field]
    assert VALUE not in str(raised.value.details)


class MemoryStore:
    backend = "memory"

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    async def put(self, name: str, value: str, *, ttl: timedelta | None = None) -> None:
        self.values[name] = value

    async def get(self, name: str) -> str | None:
        return self.values.get(name)

    async def get_many(self, names: Sequence[str]) -> dict[str, str]:
        return {n: self.values[n] for n in names if n in self.values}

    async def names(self) -> list[str]:
        return sorted(self.values)


async def test_the_resolver_reads_the_providers_own_names_trimmed() -> None:
    store = MemoryStore({"OPENAI_API_KEY": f"{VALUE}\n", "CO_API_KEY": "co-key"})

    openai = await SecretsCredentialResolver(store).resolve("openai")
    cohere = await SecretsCredentialResolver(store).resolve("cohere")

    assert openai.api_key == VALUE and openai.base_url is None
    assert cohere.api_key == "co-key"
    assert VALUE not in repr(openai)


async def test_a_stored_secret_beats_the_environment_field_by_field() -> None:
    store = MemoryStore({"OPENAI_API_KEY": VALUE})
    environ = {"OPENAI_API_KEY": "sk-from-env", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    resolver = FallbackCredentialResolver(
        SecretsCredentialResolver(store), EnvCredentialResolver(environ)
    )

    credentials = await resolver.resolve("openai")

    assert credentials.api_key == VALUE
    assert credentials.base_url == "http://127.0.0.1:9/v1"
