"""A fake Pinecone, control plane and data plane on one port, that the ``pinecone`` SDK accepts.

Control plane: ``GET /indexes/{name}`` (describe: the index's schema and its data-plane
``host``, which is this same server). Data plane: ``POST /vectors/upsert`` and
``POST /query`` with exact in-memory cosine search, namespaces and ``$eq`` / ``$and``
metadata filters, and Pinecone's metadata rules (flat values: string, number, boolean,
list of strings). The ``Api-Key`` header is checked; errors use Pinecone's
``{"error": {"code", "message"}, "status"}`` body. Indexes are made by the test
(``create_index``) or by ``POST /indexes`` as on Pinecone: creating one is the user's act.

In another process::

    python -m tests.fakes.pinecone_server --port 5080 [--api-key K] [--latency S]

prints ``FAKE_PINECONE_READY http://127.0.0.1:PORT`` once serving (use it as
``PINECONE_CONTROLLER_HOST``); ``POST /_fake/failures`` / ``/_fake/latency`` control it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import FakeServer, Handler, serve_from_command_line
from tests.fakes.embeddings import cosine

__all__ = ["FakePinecone"]

READY_PREFIX = "FAKE_PINECONE_READY"
_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND"}


@dataclass
class _Index:
    dimension: int
    metric: str
    namespaces: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = field(
        default_factory=dict
    )


def _valid_metadata(metadata: Any) -> bool:
    if not isinstance(metadata, dict):
        return False
    for value in metadata.values():
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                return False
        elif value is None or not isinstance(value, str | int | float | bool):
            return False
    return True


def _matches(metadata: dict[str, Any], expression: dict[str, Any]) -> bool:
    for key, condition in expression.items():
        if key == "$and":
            if not all(_matches(metadata, part) for part in condition):
                return False
            continue
        if isinstance(condition, dict):
            if set(condition) != {"$eq"}:
                raise ValueError(f"unsupported operator in {condition}")
            expected = condition["$eq"]
        else:
            expected = condition
        value = metadata.get(key)
        if isinstance(expected, bool) or isinstance(value, bool):
            if value is not expected:
                return False
        elif value != expected:
            return False
    return True


class FakePinecone(FakeServer):
    name: ClassVar[str] = "pinecone"
    ready_prefix: ClassVar[str] = READY_PREFIX

    def __init__(self, *, api_key: str | None = None, latency: float = 0.0) -> None:
        self.indexes: dict[str, _Index] = {}
        self._data_lock = threading.Lock()
        super().__init__(api_key=api_key, latency=latency)

    def create_index(self, name: str, dimension: int, metric: str = "cosine") -> None:
        with self._data_lock:
            self.indexes[name] = _Index(dimension, metric)

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/indexes", self._create, ["POST"]),
            ("/indexes/{name}", self._describe, ["GET"]),
            ("/vectors/upsert", self._upsert, ["POST"]),
            ("/query", self._query, ["POST"]),
        ]

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        code = _CODES.get(status, "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE")
        return JSONResponse(
            {"error": {"code": code, "message": message}, "status": status},
            status_code=status,
            headers=headers,
        )

    def key_accepted(self, request: Request) -> bool:
        return request.headers.get("api-key") == self.api_key

    # -- control plane -------------------------------------------------------------------

    def _model(self, name: str, index: _Index) -> dict[str, Any]:
        return {
            "name": name,
            "status": {"ready": True, "state": "Ready"},
            "schema": {
                "fields": {
                    "values": {
                        "type": "dense_vector",
                        "dimension": index.dimension,
                        "metric": index.metric,
                    }
                }
            },
            "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
            "deletion_protection": "disabled",
            "host": self.url,
        }

    async def _create(self, request: Request, body: Any) -> Response:
        name, dimension = body.get("name"), body.get("dimension")
        if not isinstance(name, str) or not isinstance(dimension, int):
            return self.error_response(400, "name and dimension are required")
        with self._data_lock:
            if name in self.indexes:
                return self.error_response(409, f"Resource {name} already exists")
            self.indexes[name] = _Index(dimension, body.get("metric", "cosine"))
            return JSONResponse(self._model(name, self.indexes[name]), status_code=201)

    async def _describe(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        with self._data_lock:
            index = self.indexes.get(name)
            if index is None:
                return self.error_response(404, f"Resource {name} not found")
            return JSONResponse(self._model(name, index))

    # -- data plane ------------------------------------------------------------------------
    # One fake serves every index, so the data plane finds its index by the vectors'
    # dimension when several exist; tests keep one index per fake.

    def _only_index(self) -> _Index | None:
        return next(iter(self.indexes.values()), None) if len(self.indexes) == 1 else None

    async def _upsert(self, request: Request, body: Any) -> Response:
        namespace = body.get("namespace", "")
        with self._data_lock:
            index = self._only_index()
            if index is None:
                return self.error_response(404, "index not found")
            for vector in body.get("vectors", []):
                if len(vector.get("values", [])) != index.dimension:
                    return self.error_response(
                        400,
                        f"Vector dimension {len(vector.get('values', []))} does not match the "
                        f"dimension of the index {index.dimension}",
                    )
                if not _valid_metadata(vector.get("metadata", {})):
                    return self.error_response(
                        400,
                        "Metadata value must be a string, number, boolean or list of strings",
                    )
            space = index.namespaces.setdefault(namespace, {})
            for vector in body["vectors"]:
                space[vector["id"]] = (vector["values"], vector.get("metadata", {}))
        return JSONResponse({"upsertedCount": len(body["vectors"])})

    async def _query(self, request: Request, body: Any) -> Response:
        query = body.get("vector")
        namespace = body.get("namespace", "")
        with self._data_lock:
            index = self._only_index()
            if index is None:
                return self.error_response(404, "index not found")
            if not isinstance(query, list) or len(query) != index.dimension:
                return self.error_response(
                    400,
                    f"Vector dimension {len(query or [])} does not match the dimension of the "
                    f"index {index.dimension}",
                )
            records = index.namespaces.get(namespace, {})
            scored = [
                (cosine(query, values), record_id, metadata)
                for record_id, (values, metadata) in records.items()
                if _matches(metadata, body.get("filter") or {})
            ]
        scored.sort(key=lambda item: item[0], reverse=True)
        matches = [
            {
                "id": record_id,
                "score": score,
                "values": [],
                **({"metadata": metadata} if body.get("includeMetadata") else {}),
            }
            for score, record_id, metadata in scored[: int(body.get("topK", 10))]
        ]
        return JSONResponse({"matches": matches, "namespace": namespace, "usage": {"readUnits": 5}})


if __name__ == "__main__":
    serve_from_command_line(FakePinecone)
