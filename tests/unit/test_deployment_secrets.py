"""On AWS the stack passes secret ARNs; the runtime reads the values from Secrets Manager
(moto here) and builds the database URL itself, so no value is ever in the template."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import resolve_database_url, resolve_jwt_secret, resolve_secrets_key
from llm_orchestrator.secrets.deployment import DeploymentSecretError, read_secret_string
from tests.moto_support import mocked_aws

SECRET_KEY_TEXT = "A" * 42 + "E"  # 43 alphanumerics: the shape the stack's generator makes


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    with mocked_aws(monkeypatch):
        yield boto3.client("secretsmanager")


def create(client: object, name: str, value: str) -> str:
    arn: str = client.create_secret(Name=name, SecretString=value)["ARN"]  # type: ignore[attr-defined]
    return arn


def test_the_database_url_is_built_from_the_aurora_secret_and_the_proxy_host(secretsmanager):
    arn = create(
        secretsmanager,
        "llmo/database",
        json.dumps(
            {
                "username": "llmo_admin",
                "password": "p@ss/word:1",
                "host": "cluster.example.internal",
                "port": 5432,
                "dbname": "llmo",
                "engine": "postgres",
            }
        ),
    )
    settings = Settings(environment="aws", database_secret_arn=arn)
    proxied = Settings(
        environment="aws", database_secret_arn=arn, database_host="proxy.example.internal"
    )

    assert resolve_database_url(settings) == (
        "postgresql://llmo_admin:p%40ss%2Fword%3A1@cluster.example.internal:5432/llmo"
        "?sslmode=require"
    )
    assert "@proxy.example.internal:5432/" in resolve_database_url(proxied)


def test_the_jwt_and_secrets_keys_come_from_their_secrets(secretsmanager):
    jwt_arn = create(secretsmanager, "llmo/jwt-signing-key", "j" * 64)
    key_arn = create(secretsmanager, "llmo/secrets-encryption-key", SECRET_KEY_TEXT)
    settings = Settings(environment="aws", jwt_secret_arn=jwt_arn, secrets_key_arn=key_arn)

    assert resolve_jwt_secret(settings) == "j" * 64
    assert len(resolve_secrets_key(settings)) == 32


def test_a_secret_that_is_not_a_database_secret_is_refused_without_its_value(secretsmanager):
    arn = create(secretsmanager, "llmo/database", "not-json-hunter2")

    with pytest.raises(DeploymentSecretError) as raised:
        resolve_database_url(Settings(environment="aws", database_secret_arn=arn))

    assert "is not a database secret" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_missing_secret_names_its_arn(secretsmanager):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llmo/nothing-AbCdEf"

    with pytest.raises(DeploymentSecretError, match="cannot read .*llmo/nothing"):
        read_secret_string(arn)
