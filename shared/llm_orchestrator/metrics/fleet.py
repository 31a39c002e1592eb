"""HTTP request counts of every worker of one ``llmo serve --workers N``.

Each worker counts what it serves in memory (``metrics.http``) and writes those counts to its
own file in a directory the supervising process created for this server, at most every
``FLUSH_SECONDS`` and when it stops. A scrape, whichever worker answers it, adds the other
workers' files to its own live counts: the answer is at most ``FLUSH_SECONDS`` behind for
the others' requests, exact for its own. A worker that died keeps its last file, so the
totals never go backwards when a worker is restarted (its replacement has a file of its
own); the directory goes with the server, and counting starts again at the next start,
as with one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

from llm_orchestrator.metrics.http import HttpRequestMetrics

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
_SUFFIX = ".json"


class FleetHttpMetrics(HttpRequestMetrics):
    """What ``GET /metrics`` reports: this worker's live counts plus the others' files.

    Only :meth:`counts` is served from here; requests are recorded by ``local`` (the
    instance the app's middleware feeds)."""

    def __init__(self, local: HttpRequestMetrics, directory: Path) -> None:
        super().__init__()
        self._local = local
        self._directory = directory
        self._own = directory / f"{os.getpid()}{_SUFFIX}"
        self._written: dict[tuple[str, int], int] | None = None
        self._task: asyncio.Task[None] | None = None

    def record(self, route: str, status: int) -> None:
        self._local.record(route, status)

    def counts(self) -> dict[tuple[str, int], int]:
        total = self._local.counts()
        for path in self._directory.glob(f"*{_SUFFIX}"):
            if path == self._own:
                continue
            for (route, status), count in _read(path).items():
                total[(route, status)] = total.get((route, status), 0) + count
        return total

    def flush(self) -> None:
        counts = self._local.counts()
        if counts == self._written:
            return
        rows = [[route, status, count] for (route, status), count in counts.items()]
        temporary = self._own.with_suffix(".tmp")
        temporary.write_text(json.dumps(rows), encoding="utf-8")
        os.replace(temporary, self._own)  # a reader sees the old file or the new, never half
        self._written = counts

    def start(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="metrics flush")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(OSError):
            self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except OSError:
                log.exception("could not write this worker's request counts")


def _read(path: Path) -> dict[tuple[str, int], int]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # gone, or a stray file: nothing to add
    counts: dict[tuple[str, int], int] = {}
    for row in rows if isinstance(rows, list) else ():
        try:
            route, status, count = row
            counts[(str(route), int(status))] = int(count)
        except (TypeError, ValueError):
            continue
    return counts
