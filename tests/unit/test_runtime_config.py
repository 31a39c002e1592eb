"""The composition root refuses configurations it cannot honour, instead of guessing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.engine.stepfunctions import StepFunctionsEngine
from llm_orchestrator.runtime import build_runtime, resolve_jwt_secret
from llm_orchestrator.secrets.aws_store import SecretsManagerStore
from llm_orchestrator.secrets.credentials import RedactingSecretsStore

URL = "postgresql://nobody@127.0.0.1:1/none"


def test_step_functions_engine_builds_without_io(tmp_path: Path) -> None:
    settings = Settings(engine="stepfunctions", data_dir=tmp_path, jwt_secret="s" * 40)

    runtime = build_runtime(settings, database_url=URL, environ={})

    assert isinstance(runtime.engine, StepFunctionsEngine)


def test_aws_secrets_backend_is_secrets_manager_and_builds_without_io(tmp_path: Path) -> None:
    settings = Settings(secrets_backend="aws", data_dir=tmp_path, jwt_secret="s" * 40)

    runtime = build_runtime(settings, database_url=URL, environ={})

    # Wrapped so that every value it serves is registered for redaction.
    assert isinstance(runtime.secrets, RedactingSecretsStore)
    assert isinstance(runtime.secrets.inner, SecretsManagerStore)
    assert runtime.secrets.backend == "aws"
    assert not (tmp_path / "secrets.key").exists()


def test_outside_local_a_jwt_secret_is_required(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="LLMO_JWT_SECRET is required"):
        resolve_jwt_secret(settings)
    assert not (tmp_path / "jwt-secret").exists()


def test_outside_local_only_a_runtime_that_serves_http_needs_a_jwt_secret(tmp_path: Path) -> None:
    settings = Settings(environment="aws", engine="stepfunctions", data_dir=tmp_path)

    with pytest.raises(RuntimeError, match="LLMO_JWT_SECRET is required"):
        build_runtime(settings, database_url=URL, environ={})
    runner = build_runtime(settings, database_url=URL, environ={}, serves_http=False)

    assert isinstance(runner.engine, StepFunctionsEngine)
    assert not (tmp_path / "jwt-secret").exists()


def test_outside_local_an_embedded_database_is_refused(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path, jwt_secret="s" * 40)
    with pytest.raises(RuntimeError, match="LLMO_DATABASE_URL is required"):
        build_runtime(settings)


def test_locally_the_jwt_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    first = resolve_jwt_secret(settings)
    second = resolve_jwt_secret(settings)

    assert first == second and len(first) >= 32
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


def _resolve_in_child(data_dir: str, start: Any, out: Any) -> None:
    start.wait()
    try:
        out.put(resolve_jwt_secret(Settings(data_dir=Path(data_dir))))
    except Exception as exc:  # reported to the parent, which fails the test with it
        out.put(f"error: {exc!r}")


def test_processes_creating_the_jwt_secret_at_once_all_read_the_same_whole_value(
    tmp_path: Path,
) -> None:
    # `llmo serve --workers N` starts its workers together on a new data dir: none may read
    # the file between its creation and its write (an empty secret signs forgeable tokens).
    context = multiprocessing.get_context("fork")
    for round_ in range(12):
        data_dir = tmp_path / str(round_)
        start, out = context.Event(), context.Queue()
        children = [
            context.Process(target=_resolve_in_child, args=(str(data_dir), start, out))
            for _ in range(4)
        ]
        for child in children:
            child.start()
        start.set()
        values = [out.get(timeout=30) for _ in children]
        for child in children:
            child.join(timeout=30)

        assert len(set(values)) == 1, values
        assert len(values[0]) >= 32
        assert (data_dir / "jwt-secret").read_text(encoding="utf-8") == values[0]
        assert sorted(p.name for p in data_dir.iterdir()) == ["jwt-secret"]


def test_an_empty_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("")

    with pytest.raises(RuntimeError, match="jwt-secret in the data directory is empty"):
        resolve_jwt_secret(Settings(data_dir=tmp_path))
