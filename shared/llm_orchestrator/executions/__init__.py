"""Executions: their statuses (``status``), the one lifecycle every transition goes through,
and the application service behind the execution and state endpoints."""
