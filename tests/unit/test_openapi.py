"""The checked-in openapi.json is the app's own document (run `make openapi` after API changes)."""

from pathlib import Path

from llm_orchestrator.api.openapi import render

CHECKED_IN = Path(__file__).resolve().parents[2] / "openapi.json"


def test_openapi_json_matches_the_app() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == render(), (
        "openapi.json is stale: run `make openapi` and commit it"
    )
