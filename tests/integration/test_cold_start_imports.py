"""Cold starts stay light: no HTTP handler imports a provider or vector SDK.

Checked with ``python -X importtime``, which lists every module a fresh interpreter
imports, so an SDK pulled in by any path (not only a direct import) shows up.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO_ROOT / "functions"
SDKS = ("openai", "anthropic", "cohere", "pinecone", "weaviate", "qdrant_client", "grpc")
HTTP_HANDLERS = sorted(
    path.parent.name for path in FUNCTIONS.glob("*/handler.py") if path.parent.name != "step_runner"
)


def imported_modules(code: str) -> set[str]:
    """Top-level names of every module ``code`` imports in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            names.add(module.split(".")[0])
    return names


def load(path: Path, name: str = "handler") -> str:
    return (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location({name!r}, {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
    )


def test_http_handlers_import_no_provider_or_vector_sdk() -> None:
    assert "workflows" in HTTP_HANDLERS and "executions" in HTTP_HANDLERS
    # One interpreter loads them all: if none of the SDKs is in the union, none of the
    # handlers imports one (and one start-up instead of eight keeps the test quick).
    code = "".join(load(FUNCTIONS / group / "handler.py", group) for group in HTTP_HANDLERS)

    modules = imported_modules(code)

    assert "llm_orchestrator" in modules  # the check saw the handlers' imports
    assert not modules & set(SDKS)


def test_the_step_runner_imports_an_sdk_only_when_a_step_needs_it() -> None:
    code = load(FUNCTIONS / "step_runner" / "handler.py") + (
        "import llm_orchestrator.providers as p\n"
        "r = p.ProviderRegistry(p.EnvCredentialResolver({}))\n"
        "r.llm('anthropic'); r.llm('cohere'); r.embedding('cohere'); r.llm('openai')\n"
    )

    modules = imported_modules(code)

    assert not modules & set(SDKS)
