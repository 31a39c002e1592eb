"""Workflow definitions from the API reference, shared by the tests that need them."""

from __future__ import annotations

from typing import Any

# Common Workflow 2 (RAG): embed → vector search → answer.
RAG_WORKFLOW: dict[str, Any] = {
    "name": "rag-qa",
    "version": "1.0",
    "steps": [
        {
            "id": "embed_query",
            "type": "embed",
            "provider": "openai",
            "model": "text-embedding-ada-002",
            "input": "{{query}}",
            "output": ["query_embedding"],
        },
        {
            "id": "search_docs",
            "type": "vector_search",
            "database": "pinecone",
            "index": "knowledge-base",
            "query": "{{query_embedding}}",
            "top_k": 5,
            "depends_on": ["embed_query"],
            "output": ["relevant_docs"],
        },
        {
            "id": "generate_answer",
            "type": "llm",
            "provider": "anthropic",
            "model": "claude-3-opus-20240229",
            "prompt": "Context:\n{{relevant_docs}}\n\nQuestion: {{query}}\n\nAnswer:",
            "max_tokens": 500,
            "depends_on": ["search_docs"],
            "output": ["answer"],
        },
    ],
}

# Fills an index for the RAG workflow: embed a list of documents, then vector_upsert them.
INGEST_WORKFLOW: dict[str, Any] = {
    "name": "rag-ingest",
    "version": "1.0",
    "steps": [
        {
            "id": "embed_docs",
            "type": "embed",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "input": "{{documents}}",
            "output": ["doc_vectors"],
        },
        {
            "id": "store_docs",
            "type": "vector_upsert",
            "database": "pinecone",
            "index": "knowledge-base",
            "vectors": "{{doc_vectors}}",
            "documents": "{{documents}}",
            "depends_on": ["embed_docs"],
            "output": ["ids"],
        },
    ],
}
