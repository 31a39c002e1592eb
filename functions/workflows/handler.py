"""Lambda entry point for /workflows definitions (CRUD and the compiled state machine)."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import triggers, workflows

handler = make_http_handler("workflows", [workflows.router, triggers.router])
