"""The anchors of ``bench_http``'s chain and concurrent sections: LangGraph and DBOS Transact.

Each runs the same work as our figure beside it, in the bench's own process (no HTTP: their
in-process figure is what users compare us with), on the same PostgreSQL and the same fake
OpenAI servers, calling the same OpenAI SDK:

- a chain of ``steps`` LLM calls, each durable before the next starts: LangGraph 1.x with
  ``langgraph-checkpoint-postgres`` and ``durability="sync"`` (the checkpoint is written
  before the next node runs); DBOS Transact with one ``@DBOS.step`` per call inside a
  ``@DBOS.workflow`` (each step's output recorded before the next);
- ``count`` one-call executions started at once against the 1 s fake, until all are done.

Both come from the optional ``bench`` extra (``make bench`` installs it; ``make test`` never
needs it). If one cannot be imported or run, the bench prints why instead of its figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg

FAKE_KEY = "sk-bench"
SHARDS = 8
"""SDK clients per anchor, as our OpenAI adapter spreads concurrent calls over up to eight
(one httpx pool under hundreds of concurrent calls costs more CPU than the calls)."""
POOL_SIZE = 10
"""PostgreSQL connections per anchor: our server's default pool size."""


class _Clients:
    def __init__(self, provider_url: str) -> None:
        from openai import AsyncOpenAI

        self._clients = [
            AsyncOpenAI(api_key=FAKE_KEY, base_url=provider_url, max_retries=0)
            for _ in range(SHARDS)
        ]
        self._next = itertools.cycle(self._clients)

    async def say(self, text: str) -> str:
        answer = await next(self._next).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": f"say {text}"}]
        )
        return answer.choices[0].message.content or ""

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


@contextlib.contextmanager
def _own_database(database_url: str, anchor: str) -> Iterator[str]:
    """A new database for ``anchor`` on the same server (dropped afterwards)."""
    name = f"bench_{anchor}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield psycopg.conninfo.make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


STATS_SETTLE_SECONDS = 11.0
"""How long the database's backends must be idle before ``pg_stat_database`` counts all
their transactions: a busy backend reports at most once a second, an idle one only after
10 s (``PGSTAT_IDLE_INTERVAL``). Read sooner, a run's count swung from 0.6 to 2.0 per step
as the last transactions fell out of one window or into the next."""


def transactions(database_url: str) -> int:
    """The database's committed and rolled-back transactions, once every backend has
    reported them (see :data:`STATS_SETTLE_SECONDS`)."""
    time.sleep(STATS_SETTLE_SECONDS)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


class ChainFigures:
    def __init__(self, per_step_ms: list[float], transactions_per_step: float) -> None:
        self.per_step_ms = per_step_ms
        self.transactions_per_step = transactions_per_step

    @property
    def median(self) -> float:
        return statistics.median(self.per_step_ms)


async def _timed_runs(run: Callable[[], Awaitable[Any]], runs: int, steps: int) -> list[float]:
    await run()  # warm: imports, connections, prepared statements
    per_step = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        per_step.append((time.perf_counter() - started) * 1000 / steps)
    return per_step


# -- LangGraph --------------------------------------------------------------------------


def _langgraph_graph(clients: _Clients, steps: int, checkpointer: Any) -> Any:
    import operator
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph

    # The functional form: evaluated here (the class form's annotations would be strings
    # under ``from __future__ import annotations``, which LangGraph resolves globally).
    State = TypedDict("State", {"outputs": Annotated[dict[str, str], operator.or_]})  # noqa: UP013

    def node(name: str) -> Callable[[Any], Awaitable[dict[str, Any]]]:
        async def run(state: Any) -> dict[str, Any]:
            return {"outputs": {f"out_{name}": await clients.say("1")}}

        return run

    builder = StateGraph(State)
    names = [f"s{i}" for i in range(steps)]
    for name in names:
        builder.add_node(name, node(name))
    for before, after in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(before, after)
    return builder.compile(checkpointer=checkpointer)


async def _langgraph(
    url: str, provider_url: str, work: Callable[[Callable[[int], Any]], Awaitable[Any]]
) -> Any:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    clients = _Clients(provider_url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    await pool.open()
    try:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        graphs: dict[int, Any] = {}

        def graph(steps: int) -> Any:
            if steps not in graphs:
                graphs[steps] = _langgraph_graph(clients, steps, saver)
            return graphs[steps]

        return await work(graph)
    finally:
        await clients.close()
        await pool.close()


def langgraph_chain(database_url: str, provider_url: str, steps: int, runs: int) -> ChainFigures:
    async def work(graph: Callable[[int], Any]) -> list[float]:
        chain = graph(steps)

        async def run() -> None:
            config = {"configurable": {"thread_id": str(uuid.uuid4())}}
            await chain.ainvoke({"outputs": {}}, config, durability="sync")

        await run()
        before = transactions(url)
        timed = await _timed_runs(run, runs, steps)
        after = transactions(url)
        # _timed_runs warms with one more run; the counter query is one transaction.
        return [*timed, (after - before - 1) / (steps * (runs + 1))]

    with _own_database(database_url, "langgraph") as url:
        figures = asyncio.run(_langgraph(url, provider_url, work))
    return ChainFigures(figures[:-1], figures[-1])


def langgraph_concurrent(database_url: str, provider_url: str, count: int) -> float:
    async def work(graph: Callable[[int], Any]) -> float:
        one = graph(1)

        async def run() -> None:
            config = {"configurable": {"thread_id": str(uuid.uuid4())}}
            await one.ainvoke({"outputs": {}}, config, durability="sync")

        await asyncio.gather(*(run() for _ in range(3)))  # warm
        started = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(count)))
        return time.perf_counter() - started

    with _own_database(database_url, "langgraph") as url:
        result: float = asyncio.run(_langgraph(url, provider_url, work))
    return result


# -- DBOS Transact ----------------------------------------------------------------------


def _dbos(url: str, provider_url: str, work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    from dbos import DBOS, DBOSConfig

    sqlalchemy_url = url_for_sqlalchemy(url)
    config: DBOSConfig = {
        "name": "llmo-bench-anchor",
        "system_database_url": sqlalchemy_url,
        "sys_db_pool_size": POOL_SIZE,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    clients: _Clients | None = None

    @DBOS.step()
    async def call(name: str) -> str:
        assert clients is not None
        return await clients.say("1")

    @DBOS.workflow()
    async def chain(steps: int) -> dict[str, str]:
        outputs = {}
        for i in range(steps):
            outputs[f"out_s{i}"] = await call(f"s{i}")
        return outputs

    async def main() -> Any:
        nonlocal clients
        clients = _Clients(provider_url)
        try:
            return await work(chain, DBOS)
        finally:
            await clients.close()

    DBOS.launch()
    try:
        return asyncio.run(main())
    finally:
        DBOS.destroy(destroy_registry=True)


def url_for_sqlalchemy(libpq_url: str) -> str:
    """A ``postgresql+psycopg://`` URL for the database of ``libpq_url`` (a conninfo string
    or URL; a Unix-socket host travels as the ``host`` query parameter)."""
    from urllib.parse import quote, urlencode

    info = psycopg.conninfo.conninfo_to_dict(libpq_url)
    user = quote(str(info.get("user", "")), safe="")
    password = f":{quote(str(info['password']), safe='')}" if info.get("password") else ""
    query = {key: str(info[key]) for key in ("host", "port") if info.get(key)}
    return (
        f"postgresql+psycopg://{user}{password}@/{quote(str(info['dbname']), safe='')}"
        f"?{urlencode(query)}"
    )


def dbos_chain(database_url: str, provider_url: str, steps: int, runs: int) -> ChainFigures:
    async def work(chain: Any, _: Any) -> list[float]:
        async def run() -> None:
            await chain(steps)

        await run()
        before = transactions(url)
        timed = await _timed_runs(run, runs, steps)
        after = transactions(url)
        return [*timed, (after - before - 1) / (steps * (runs + 1))]

    with _own_database(database_url, "dbos") as url:
        figures = _dbos(url, provider_url, work)
    return ChainFigures(figures[:-1], figures[-1])


def dbos_concurrent(database_url: str, provider_url: str, count: int) -> float:
    async def work(chain: Any, dbos: Any) -> float:
        await asyncio.gather(*(chain(1) for _ in range(3)))  # warm
        started = time.perf_counter()
        handles = await asyncio.gather(*(dbos.start_workflow_async(chain, 1) for _ in range(count)))
        await asyncio.gather(*(handle.get_result() for handle in handles))
        return time.perf_counter() - started

    with _own_database(database_url, "dbos") as url:
        result: float = _dbos(url, provider_url, work)
    return result


CHAIN_ANCHORS: dict[str, Callable[[str, str, int, int], ChainFigures]] = {
    "langgraph": langgraph_chain,
    "dbos": dbos_chain,
}
CONCURRENT_ANCHORS: dict[str, Callable[[str, str, int], float]] = {
    "langgraph": langgraph_concurrent,
    "dbos": dbos_concurrent,
}
