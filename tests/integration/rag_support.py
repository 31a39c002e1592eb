"""The RAG walk of the API reference on any vector database: an ingest workflow
(``embed`` a list of documents → ``vector_upsert``), then the reference's "Workflow 2: RAG"
with only ``database`` and ``index`` changed."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.integration.conftest import Session
from tests.integration.execution_support import (
    FAST_RETRY,
    create_workflow,
    start_execution,
    wait_for,
)
from tests.samples import RAG_WORKFLOW

DOCUMENTS = [
    "The Eiffel Tower is in Paris.",
    "Bananas are rich in potassium.",
    "PostgreSQL is a relational database.",
    "Mount Everest is the highest mountain.",
]


def ingest_steps(database: str, index: str, **upsert: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": "embed_docs",
            "type": "embed",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "input": "{{documents}}",
            "output": ["doc_vectors"],
            "retry": FAST_RETRY,
        },
        {
            "id": "store_docs",
            "type": "vector_upsert",
            "database": database,
            "index": index,
            "vectors": "{{doc_vectors}}",
            "documents": "{{documents}}",
            "depends_on": ["embed_docs"],
            "output": ["ids"],
            "retry": FAST_RETRY,
            **upsert,
        },
    ]


def rag_definition(database: str, index: str) -> dict[str, Any]:
    """The reference's RAG workflow with only ``database`` and ``index`` changed.

    The answer step is pointed at OpenAI: the test asserts on the prompt it receives.
    """
    definition = copy.deepcopy(RAG_WORKFLOW)
    search = definition["steps"][1]
    search["database"], search["index"] = database, index
    search["retry"] = FAST_RETRY
    answer = definition["steps"][2]
    answer["provider"], answer["model"] = "openai", "gpt-4"
    return definition


async def ingest(
    client: httpx.AsyncClient,
    session: Session,
    database: str,
    index: str,
    documents: list[Any],
    **upsert: Any,
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, session, ingest_steps(database, index, **upsert))
    execution_id = await start_execution(client, session, workflow_id, {"documents": documents})
    return await wait_for(client, session, workflow_id, execution_id, timeout=60.0)


async def run_rag(
    client: httpx.AsyncClient, session: Session, database: str, index: str, query: str
) -> dict[str, Any]:
    definition = rag_definition(database, index)
    response = await client.post("/workflows", headers=session.headers, json=definition)
    assert response.status_code == 201, response.text
    workflow_id = response.json()["id"]
    execution_id = await start_execution(client, session, workflow_id, {"query": query})
    return await wait_for(client, session, workflow_id, execution_id, timeout=60.0)
