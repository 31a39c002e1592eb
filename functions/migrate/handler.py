"""Lambda entry point for the deploy-time migrations (a CloudFormation custom resource)."""

from llm_orchestrator.migrate_lambda import make_migrate_handler

handler = make_migrate_handler()
