"""How the client commands print: ``rich`` tables for people, JSON for scripts (``--json``),
and every error as one line on stderr (as a JSON object on stdout with ``--json``)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from llm_orchestrator.client import LLMOrchestratorError


class Output:
    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.errors = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str), flush=True)

    def result(self, data: Any, text: str) -> None:
        if self.as_json:
            self.json(data)
        else:
            self.console.print(text, markup=False)

    def document(self, data: Any) -> None:
        if self.as_json:
            self.json(data)
        else:
            self.console.print_json(json.dumps(data, default=str))

    def table(self, rows: list[dict[str, Any]], columns: list[str], *, title: str) -> None:
        if self.as_json:
            self.json(rows)
            return
        if not rows:
            self.console.print(f"{title}: none", markup=False)
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column.replace("_", " "), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        self.console.print(table)

    def note(self, text: str) -> None:
        self.errors.print(text, markup=False)

    def usage_error(self, message: str) -> None:
        if self.as_json:
            self.json({"code": "usage_error", "message": message})
        else:
            self.errors.print(f"llmo: error: {message}", markup=False)

    def api_error(self, exc: LLMOrchestratorError) -> None:
        if self.as_json:
            self.json(
                {
                    "status": exc.status,
                    "code": exc.code,
                    "message": exc.message,
                    "details": exc.details,
                    "request_id": exc.request_id,
                }
            )
            return
        fields = [f"{field.field}: {field.message}" for field in getattr(exc, "errors", [])]
        message = exc.message + (f" ({'; '.join(fields)})" if fields else "")
        status = f"{exc.status} {exc.code}" if exc.status is not None else exc.code
        where = f", request {exc.request_id}" if exc.request_id else ""
        self.errors.print(f"llmo: error: {message} [{status}{where}]", markup=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)
