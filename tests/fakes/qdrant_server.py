"""A fake Qdrant REST API that ``qdrant-client`` (``prefer_grpc=False``) accepts.

Collections with cosine distance, points with payloads, ``points/query`` with an exact
in-memory cosine search, and the payload filters we send (``must`` of ``match`` and
``range`` conditions on dotted keys). The API key is checked from ``api-key`` (or a bearer
token) as Qdrant does; errors use Qdrant's ``{"status": {"error": …}}`` body.

In another process::

    python -m tests.fakes.qdrant_server --port 6333 [--api-key K] [--latency S]

prints ``FAKE_QDRANT_READY http://127.0.0.1:PORT`` once it accepts connections; then
``POST /_fake/failures`` (``{"status": 429, "times": 1, "retry_after": 1}``) and
``POST /_fake/latency`` (``{"seconds": 0.5}``) control it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import FakeServer, Handler, serve_from_command_line
from tests.fakes.embeddings import cosine

__all__ = ["FakeQdrant"]

READY_PREFIX = "FAKE_QDRANT_READY"


@dataclass
class _Collection:
    size: int
    distance: str
    points: dict[str, tuple[list[float], dict[str, Any]]] = field(default_factory=dict)


def _ok(result: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"result": result, "status": "ok", "time": 0.0001}, status_code=status)


def _payload_value(payload: dict[str, Any], key: str) -> Any:
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(payload: dict[str, Any], condition: dict[str, Any]) -> bool:
    value = _payload_value(payload, condition["key"])
    if condition.get("match") is not None:
        expected = condition["match"].get("value")
        return value == expected and type(value) is type(expected)
    if condition.get("range") is not None:
        bounds = condition["range"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return all(
            (bounds.get(op) is None or check(value, bounds[op]))
            for op, check in (
                ("gte", lambda v, b: v >= b),
                ("lte", lambda v, b: v <= b),
                ("gt", lambda v, b: v > b),
                ("lt", lambda v, b: v < b),
            )
        )
    raise ValueError(f"unsupported condition {condition}")


class FakeQdrant(FakeServer):
    name: ClassVar[str] = "qdrant"
    ready_prefix: ClassVar[str] = READY_PREFIX

    def __init__(self, *, api_key: str | None = None, latency: float = 0.0) -> None:
        self.collections: dict[str, _Collection] = {}
        self.search_params: list[dict[str, Any] | None] = []
        """Each ``points/query``'s ``params`` (``hnsw_ef``, …), in order (exact search
        ignores them)."""
        self._data_lock = threading.Lock()
        super().__init__(api_key=api_key, latency=latency)

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/", self._root, ["GET"]),
            ("/collections/{name}/exists", self._exists, ["GET"]),
            ("/collections/{name}", self._collection, ["PUT", "DELETE"]),
            ("/collections/{name}/points", self._upsert, ["PUT"]),
            ("/collections/{name}/points/query", self._query, ["POST"]),
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
        return JSONResponse(
            {"status": {"error": message}, "time": 0.0}, status_code=status, headers=headers
        )

    def key_accepted(self, request: Request) -> bool:
        supplied = request.headers.get("api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        return supplied == self.api_key

    # -- handlers ------------------------------------------------------------------------

    async def _root(self, request: Request, body: Any) -> Response:
        return JSONResponse({"title": "qdrant - vector search engine", "version": "1.15.0"})

    async def _exists(self, request: Request, body: Any) -> Response:
        with self._data_lock:
            return _ok({"exists": request.path_params["name"] in self.collections})

    async def _collection(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        with self._data_lock:
            if request.method == "DELETE":
                return _ok(self.collections.pop(name, None) is not None)
            if name in self.collections:
                return self.error_response(409, f"Wrong input: Collection `{name}` already exists!")
            vectors = body.get("vectors") or {}
            if not isinstance(vectors.get("size"), int) or vectors.get("distance") is None:
                return self.error_response(
                    422, "Format error in JSON body: vectors need size and distance"
                )
            self.collections[name] = _Collection(vectors["size"], vectors["distance"])
        return _ok(True)

    async def _upsert(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        with self._data_lock:
            collection = self.collections.get(name)
            if collection is None:
                return self.error_response(404, f"Not found: Collection `{name}` doesn't exist!")
            for point in body.get("points", []):
                vector = point["vector"]
                if len(vector) != collection.size:
                    return self.error_response(
                        400,
                        "Wrong input: Vector dimension error: expected dim: "
                        f"{collection.size}, got {len(vector)}",
                    )
            for point in body["points"]:
                collection.points[str(point["id"])] = (point["vector"], point.get("payload") or {})
        return _ok({"operation_id": int(time.time()), "status": "completed"})

    async def _query(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        query = body.get("query")
        if isinstance(query, dict):
            query = query.get("nearest")
        conditions = ((body.get("filter") or {}).get("must")) or []
        limit = int(body.get("limit", 10))
        self.search_params.append(body.get("params"))
        with self._data_lock:
            collection = self.collections.get(name)
            if collection is None:
                return self.error_response(404, f"Not found: Collection `{name}` doesn't exist!")
            if not isinstance(query, list) or len(query) != collection.size:
                got = len(query) if isinstance(query, list) else 0
                return self.error_response(
                    400,
                    "Wrong input: Vector dimension error: expected dim: "
                    f"{collection.size}, got {got}",
                )
            scored = [
                (cosine(query, vector), point_id, payload)
                for point_id, (vector, payload) in collection.points.items()
                if all(_matches(payload, condition) for condition in conditions)
            ]
        scored.sort(key=lambda item: item[0], reverse=True)
        points = [
            {
                "id": point_id,
                "version": 1,
                "score": score,
                "payload": payload if body.get("with_payload") else None,
                "vector": None,
            }
            for score, point_id, payload in scored[:limit]
        ]
        return _ok({"points": points})


if __name__ == "__main__":
    serve_from_command_line(FakeQdrant)
