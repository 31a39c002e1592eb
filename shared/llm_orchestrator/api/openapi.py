"""Print the OpenAPI document of the whole API (``make openapi`` writes ``openapi.json``).

The checked-in copy is what clients and the console generate from; a test fails when it
drifts from the app.
"""

from __future__ import annotations

import json
from typing import Any


def openapi_document() -> dict[str, Any]:
    from llm_orchestrator.api.app import create_app
    from llm_orchestrator.api.routers import all_routers

    async def no_runtime() -> Any:  # the schema never touches the runtime
        raise RuntimeError("not needed to render the schema")

    document: dict[str, Any] = create_app(all_routers(), no_runtime).openapi()
    return document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
