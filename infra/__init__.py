"""The CDK app that deploys LLM Orchestrator to AWS (see infra/README.md)."""
