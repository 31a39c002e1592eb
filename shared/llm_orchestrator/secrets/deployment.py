"""Values the AWS deployment keeps in Secrets Manager, read by ARN once per process.

The CDK stack passes ARNs, never values: ``LLMO_DATABASE_SECRET_ARN`` (the Aurora secret,
JSON with ``username``, ``password``, ``host``, ``port``, ``dbname``), ``LLMO_JWT_SECRET_ARN``
and ``LLMO_SECRETS_KEY_ARN`` (plain strings). boto3 is imported here only, lazily, and
honours ``AWS_ENDPOINT_URL`` like every other AWS adapter.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote


class DeploymentSecretError(RuntimeError):
    """A deployment secret is missing or malformed. The message names the secret's ARN and
    what is wrong, never its value."""


def read_secret_string(arn: str, client: Any | None = None) -> str:
    if client is None:
        import boto3

        client = boto3.client("secretsmanager")
    try:
        value = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore's errors carry no secret material
        raise DeploymentSecretError(f"cannot read {arn}: {type(exc).__name__}") from exc
    text = value.get("SecretString")
    if not isinstance(text, str) or not text:
        raise DeploymentSecretError(f"{arn} has no string value")
    return text


def database_url_from_secret(
    arn: str, *, host: str | None = None, client: Any | None = None
) -> str:
    """A libpq URL from the RDS-generated secret; ``host`` (the RDS Proxy) overrides its
    host. TLS is required: the proxy refuses anything else."""
    try:
        fields = json.loads(read_secret_string(arn, client))
        user, password = fields["username"], fields["password"]
        target = host or fields["host"]
        port = int(fields.get("port") or 5432)
        dbname = fields.get("dbname") or "postgres"
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentSecretError(
            f"{arn} is not a database secret (JSON with username, password, host)"
        ) from exc
    credentials = f"{quote(str(user), safe='')}:{quote(str(password), safe='')}"
    return f"postgresql://{credentials}@{target}:{port}/{quote(str(dbname))}?sslmode=require"
