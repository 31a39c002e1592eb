"""``import llm_orchestrator.client`` loads no server code: a script or a notebook that only
talks to the API must not pay for (or need) FastAPI, psycopg, the engine or provider SDKs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "psycopg",
    "psycopg_pool",
    "mangum",
    "openai",
    "boto3",
    "aws_lambda_powertools",
    "llm_orchestrator.api",
    "llm_orchestrator.engine",
    "llm_orchestrator.store",
    "llm_orchestrator.runtime",
    "llm_orchestrator.config",
    "llm_orchestrator.steps",
    "llm_orchestrator.providers",
)


def test_importing_the_sdk_loads_no_server_code() -> None:
    probe = (
        "import json, sys\n"
        "import llm_orchestrator.client\n"
        "from llm_orchestrator.client import AsyncClient, Client\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )

    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert ran.returncode == 0, ran.stderr
    loaded = set(json.loads(ran.stdout))
    assert "httpx" in loaded and "llm_orchestrator.client" in loaded
    offending = sorted(
        name
        for name in loaded
        for server in SERVER_MODULES
        if name == server or name.startswith(server + ".")
    )
    assert offending == []
