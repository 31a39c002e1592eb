"""Lambda entry point for /workflows/{workflowId}/execute|status|pause|resume|cancel and
POST /events."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import executions, triggers

handler = make_http_handler("executions", [executions.router, triggers.events_router])
