"""The vector stores load their SDK (or gRPC) only when a store is used. That no Lambda
handler loads one at a cold start is checked with the other handler imports in
``test_cold_start.py``."""

from __future__ import annotations

import subprocess
import sys

VECTOR_MODULES = ("pgvector", "qdrant_client", "pinecone", "weaviate", "grpc", "numpy")


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
