"""The whole API on a real TCP port, for the SDK and the ``llmo`` client commands (the
``live`` fixture in ``conftest.py``).

The in-process ASGI client the other tests use cannot serve a synchronous ``httpx.Client``
or a command line; this runs the same ``LocalServer`` under uvicorn on a background thread
with its own event loop (the runtime's pool opens on that loop, on first use).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import Runtime
from llm_orchestrator.server import bootstrap, build_local_server
from tests.fakes.base import PromptServer

__all__ = ["LiveServer", "start_live_server"]


class LiveServer:
    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        local = build_local_server(settings, database_url=settings.database_url, environ=environ)
        self.runtime: Runtime = local.runtime

        @asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            await bootstrap(local.runtime)
            yield
            await local.runtime.close()

        local.app.router.lifespan_context = lifespan
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # As in tests/fakes/base.py: without it every answer waits for a delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            local.app,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = PromptServer(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="llmo-live-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        port: int = self._socket.getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v1"

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the live API server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.exit()
        self._thread.join(timeout=15.0)
        self._socket.close()


def start_live_server(settings: Settings, environ: Mapping[str, str]) -> LiveServer:
    """Serving once this returns; ``environ`` holds the provider settings (see
    ``conftest.fake_environ``). The ``live`` fixture is this on the test's settings."""
    return LiveServer(settings, environ).start()
