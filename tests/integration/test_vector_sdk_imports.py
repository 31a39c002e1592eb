"""Cold start stays light: no HTTP handler loads a vector-database SDK or gRPC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
HTTP_HANDLERS = sorted(
    path for path in FUNCTIONS.glob("*/handler.py") if path.parent.name != "step_runner"
)
VECTOR_MODULES = ("pgvector", "qdrant_client", "pinecone", "weaviate", "grpc", "numpy")


@pytest.mark.parametrize("handler", HTTP_HANDLERS, ids=lambda path: path.parent.name)
def test_http_handlers_import_no_vector_sdk(handler: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {str(handler)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(','.join(n for n in {VECTOR_MODULES!r} if n in sys.modules))\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == ""


def test_the_vector_registry_imports_no_sdk_until_a_store_is_used() -> None:
    code = (
        "import sys\n"
        "from llm_orchestrator.vectorstores import VectorStoreRegistry, EnvSettingResolver\n"
        "from llm_orchestrator.steps.runner import StepRunner\n"
        "VectorStoreRegistry(EnvSettingResolver({}))\n"
        f"print(','.join(n for n in {VECTOR_MODULES!r} if n in sys.modules))\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == ""
