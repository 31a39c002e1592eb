"""A fake Weaviate, REST and gRPC, that ``weaviate-client`` v4 accepts.

REST (``/v1``): ``meta``, ``.well-known/ready``, and the schema calls that create and look
up a collection. gRPC: the ``weaviate.v1.Weaviate`` service's ``BatchObjects`` and
``Search`` (``near_vector`` with an exact in-memory cosine search, ``Equal`` / ``And``
filters on properties), served with the client's own generated stubs
(``weaviate.proto.v1``). API keys are checked as ``Authorization: Bearer`` on both
protocols. Injected failures answer REST with Weaviate's ``{"error": [{"message"}]}`` body
and gRPC with the matching status code (401 ``UNAUTHENTICATED``, 403
``PERMISSION_DENIED``, 429 ``RESOURCE_EXHAUSTED``, 5xx ``INTERNAL``).

In another process::

    python -m tests.fakes.weaviate_server --port 8088 [--grpc-port 50051] [--api-key K]

prints ``FAKE_WEAVIATE_READY http://127.0.0.1:PORT grpc=http://127.0.0.1:GRPC_PORT``.
"""

from __future__ import annotations

import argparse
import struct
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import FakeServer, Handler, serve_from_command_line
from tests.fakes.embeddings import cosine

__all__ = ["FakeWeaviate"]

READY_PREFIX = "FAKE_WEAVIATE_READY"
VERSION = "1.30.0"
_GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
}


@dataclass
class _Collection:
    config: dict[str, Any]
    objects: dict[str, tuple[list[float], dict[str, Any]]] = field(default_factory=dict)
    dimension: int | None = None


def _floats(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


class FakeWeaviate(FakeServer):
    name: ClassVar[str] = "weaviate"
    ready_prefix: ClassVar[str] = READY_PREFIX

    def __init__(
        self, *, api_key: str | None = None, latency: float = 0.0, grpc_port: int = 0
    ) -> None:
        self.collections: dict[str, _Collection] = {}
        self._data_lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._wanted_grpc_port = grpc_port
        self.grpc_port = 0
        super().__init__(api_key=api_key, latency=latency)

    # -- REST ------------------------------------------------------------------------------

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/v1/meta", self._meta, ["GET"]),
            ("/v1/.well-known/ready", self._ready, ["GET"]),
            ("/v1/schema", self._create, ["POST"]),
            ("/v1/schema/{name}", self._get, ["GET"]),
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
        return JSONResponse({"error": [{"message": message}]}, status_code=status, headers=headers)

    def key_accepted(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def gated(self, request: Request) -> bool:
        return request.url.path != "/v1/.well-known/ready"

    async def _meta(self, request: Request, body: Any) -> Response:
        return JSONResponse({"version": VERSION, "modules": {}, "hostname": "http://[::]:8080"})

    async def _ready(self, request: Request, body: Any) -> Response:
        return Response(status_code=200)

    async def _create(self, request: Request, body: Any) -> Response:
        name = body.get("class")
        with self._data_lock:
            if not isinstance(name, str) or not name[:1].isupper():
                return self.error_response(422, f"'{name}' is not a valid class name")
            if name in self.collections:
                return self.error_response(422, f"class name {name!r} already exists")
            self.collections[name] = _Collection(body)
        return JSONResponse(body)

    async def _get(self, request: Request, body: Any) -> Response:
        with self._data_lock:
            collection = self.collections.get(request.path_params["name"])
            if collection is None:
                return Response(status_code=404)
            return JSONResponse(collection.config)

    # -- gRPC ------------------------------------------------------------------------------

    def _serve(self, host: str, port: int) -> None:
        super()._serve(host, port)
        from weaviate.proto.v1 import weaviate_pb2_grpc

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Servicer(self), server)
        self.grpc_port = server.add_insecure_port(f"{host}:{self._wanted_grpc_port}")
        server.start()
        self._grpc = server

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        super().stop()

    @property
    def grpc_url(self) -> str:
        return f"http://{self._host}:{self.grpc_port}"

    def ready_line(self) -> str:
        return f"{super().ready_line()} grpc={self.grpc_url}"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--grpc-port", type=int, default=0, help="0 picks a free port")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        return super().options_from(args) | {"grpc_port": args.grpc_port}

    def _grpc_gate(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        status = 200
        metadata = dict(context.invocation_metadata())
        try:
            if failure is not None:
                status = failure.status
                code = _GRPC_CODES.get(failure.status, grpc.StatusCode.INTERNAL)
                context.abort(code, failure.message)
            if self.api_key is not None and metadata.get("authorization") != (
                f"Bearer {self.api_key}"
            ):
                status = 401
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid api key")
        finally:
            if status != 200:
                self._record(method, status, metadata)

    def _record(self, method: str, status: int, metadata: dict[str, Any]) -> None:
        self.record("GRPC", f"/weaviate.v1.Weaviate/{method}", status, metadata)

    def batch_objects(self, request: Any, context: grpc.ServicerContext) -> Any:
        from weaviate.proto.v1 import batch_pb2

        self._grpc_gate("BatchObjects", context)
        errors = []
        with self._data_lock:
            for index, obj in enumerate(request.objects):
                collection = self.collections.get(obj.collection)
                vector = _object_vector(obj)
                if collection is None:
                    errors.append(
                        batch_pb2.BatchObjectsReply.BatchError(
                            index=index, error=f"class {obj.collection!r} not found"
                        )
                    )
                    continue
                if collection.dimension is not None and len(vector) != collection.dimension:
                    errors.append(
                        batch_pb2.BatchObjectsReply.BatchError(
                            index=index,
                            error=f"new node has a vector with length {len(vector)}. Existing"
                            f" nodes have vectors with length {collection.dimension}",
                        )
                    )
                    continue
                collection.dimension = len(vector)
                properties = _struct_to_dict(obj.properties.non_ref_properties)
                collection.objects[obj.uuid] = (vector, properties)
        self._record("BatchObjects", 200, dict(context.invocation_metadata()))
        return batch_pb2.BatchObjectsReply(took=0.001, errors=errors)

    def search(self, request: Any, context: grpc.ServicerContext) -> Any:
        from weaviate.proto.v1 import properties_pb2, search_get_pb2

        self._grpc_gate("Search", context)
        with self._data_lock:
            collection = self.collections.get(request.collection)
            if collection is None:
                self._record("Search", 404, {})
                context.abort(
                    grpc.StatusCode.UNKNOWN,
                    f"could not find class {request.collection} in schema",
                )
            query = _near_vector(request.near_vector)
            scored = []
            for object_id, (vector, properties) in collection.objects.items():
                if len(vector) != len(query):
                    self._record("Search", 400, {})
                    context.abort(
                        grpc.StatusCode.UNKNOWN,
                        f"vector search: knn search: distance between entrypoint and query"
                        f" node: vector lengths don't match: {len(vector)} vs {len(query)}",
                    )
                if request.HasField("filters") and not _passes(request.filters, properties):
                    continue
                scored.append((1.0 - cosine(query, vector), object_id, properties))
        scored.sort(key=lambda item: item[0])
        wanted = list(request.properties.non_ref_properties)
        results = []
        for distance, object_id, properties in scored[: request.limit or 10]:
            fields = {
                key: _value(properties[key]) for key in (wanted or properties) if key in properties
            }
            results.append(
                search_get_pb2.SearchResult(
                    properties=search_get_pb2.PropertiesResult(
                        non_ref_props=properties_pb2.Properties(fields=fields),
                        target_collection=request.collection,
                    ),
                    metadata=search_get_pb2.MetadataResult(
                        id=object_id, distance=distance, distance_present=True
                    ),
                )
            )
        self._record("Search", 200, dict(context.invocation_metadata()))
        return search_get_pb2.SearchReply(took=0.001, results=results)


class _Servicer:
    """Bound to ``weaviate_pb2_grpc.add_WeaviateServicer_to_server``; other methods are
    left unimplemented (the client's default answer)."""

    def __init__(self, fake: FakeWeaviate) -> None:
        self.BatchObjects = fake.batch_objects
        self.Search = fake.search

    def __getattr__(self, name: str) -> Any:
        def unimplemented(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not faked")

        return unimplemented


def _object_vector(obj: Any) -> list[float]:
    if obj.vector_bytes:
        return _floats(obj.vector_bytes)
    if len(obj.vectors):
        return _floats(obj.vectors[0].vector_bytes)
    return list(obj.vector)


def _near_vector(near: Any) -> list[float]:
    if near.vector_bytes:
        return _floats(near.vector_bytes)
    if len(near.vectors):
        return _floats(near.vectors[0].vector_bytes)
    return list(near.vector)


def _struct_to_dict(struct_value: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    result: dict[str, Any] = MessageToDict(struct_value)
    return result


def _value(item: Any) -> Any:
    from weaviate.proto.v1 import properties_pb2

    if isinstance(item, bool):
        return properties_pb2.Value(bool_value=item)
    if isinstance(item, int):
        return properties_pb2.Value(int_value=item)
    if isinstance(item, float):
        if item.is_integer():
            # Struct numbers are doubles; keep integers integral, as Weaviate's int type does.
            return properties_pb2.Value(int_value=int(item))
        return properties_pb2.Value(number_value=item)
    return properties_pb2.Value(text_value=str(item))


def _passes(filters: Any, properties: dict[str, Any]) -> bool:
    from weaviate.proto.v1 import base_pb2

    operator = filters.operator
    if operator == base_pb2.Filters.OPERATOR_AND:
        return all(_passes(part, properties) for part in filters.filters)
    if operator != base_pb2.Filters.OPERATOR_EQUAL:
        raise ValueError(f"operator {operator} is not faked")
    name = filters.target.property if filters.HasField("target") else filters.on[0]
    value = properties.get(name)
    kind = filters.WhichOneof("test_value")
    expected = getattr(filters, kind) if kind else None
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    return value == expected


if __name__ == "__main__":
    serve_from_command_line(FakeWeaviate)
