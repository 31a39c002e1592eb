"""Lambda entry point for the vector runner: the step runner's code, invoked by the Tasks of
``vector_upsert`` and ``vector_search`` steps. It ships with the vector database SDKs and
without the provider SDKs (layers/bundles.py); the step runner has the reverse."""

from llm_orchestrator.step_runner_lambda import make_step_runner_handler

handler = make_step_runner_handler(service="vector_runner")
