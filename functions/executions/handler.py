"""Lambda entry point for /workflows/{workflowId}/execute|status|pause|resume|cancel."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import executions

handler = make_http_handler("executions", [executions.router])
