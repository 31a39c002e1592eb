"""One provider call's CPU: our OpenAI adapter against the bare official SDK, in one process.

Run: ``python -m tests.perf.bench_provider``. Starts the fake OpenAI server (no latency,
another process), then makes ``CALLS`` completions, ``CONCURRENCY`` at a time, through

- ``ours``: ``OpenAIProvider.complete`` (credentials resolved per call, the client cache,
  the request built and the reply checked, errors translated), over the transport the
  server uses (aiohttp where installed);
- ``bare_post``: a bare ``openai.AsyncOpenAI`` on the same transport and TLS context,
  ``client.post("/chat/completions", body=..., cast_to=object)``: the least any caller of
  the official client pays for the same request;
- ``bare_typed``: the same client's ``chat.completions.create``, as most callers write it.

Each variant gets fresh clients per round (the fake closes connections idle for 5 s), warmed
by ``2 x CONCURRENCY`` calls; rounds rotate the order of the variants, so each sees the
machine's load as the others do. Prints this process's CPU (``time.process_time()``) per
call, the median over ``ROUNDS`` rounds, and ``provider_call_ours_over_bare_post`` /
``..._over_bare_typed``: the median of the rounds' ratios. On a shared machine absolute
times drift; the ratios hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CALLS = int(os.environ.get("LLMO_BENCH_PROVIDER_CALLS", "1000"))
CONCURRENCY = int(os.environ.get("LLMO_BENCH_PROVIDER_CONCURRENCY", "200"))
ROUNDS = int(os.environ.get("LLMO_BENCH_PROVIDER_ROUNDS", "8"))
API_KEY = "sk-bench-provider"
MESSAGES = [{"role": "user", "content": "say 1"}]


def report(name: str, value: str) -> None:
    print(f"{name}={value} (load {os.getloadavg()[0]:.2f})", flush=True)


@contextlib.contextmanager
def _fake_openai() -> Iterator[str]:
    """The fake OpenAI server in another process; yields its base URL."""
    args = [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"]
    args += ["--latency", "0", "--api-key", API_KEY]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("FAKE_OPENAI_READY"):
                yield line.split()[1]
                return
        raise RuntimeError("the fake OpenAI server exited during start-up")
    finally:
        process.terminate()
        process.wait(timeout=15)


class _Variant:
    """A way of making the call, with a fresh client per round."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client: Any = None

    def open(self) -> None:
        raise NotImplementedError

    async def call(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _Ours(_Variant):
    def open(self) -> None:
        from llm_orchestrator.providers import ChatRequest, EnvCredentialResolver, OpenAIProvider

        resolver = EnvCredentialResolver(
            {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": self.base_url}
        )
        self.client = OpenAIProvider(resolver)
        self.request = ChatRequest(model="gpt-4", prompt="say 1")

    async def call(self) -> None:
        await self.client.complete(self.request)

    async def close(self) -> None:
        await self.client.aclose()


class _Bare(_Variant):
    def open(self) -> None:
        import openai

        from llm_orchestrator.providers.transport import default_transport, shared_ssl_context

        http_client = (
            openai.DefaultAioHttpClient(verify=shared_ssl_context(), timeout=60.0)
            if default_transport() == "aiohttp"
            else openai.DefaultAsyncHttpxClient(verify=shared_ssl_context(), timeout=60.0)
        )
        self.client = openai.AsyncOpenAI(
            api_key=API_KEY,
            base_url=self.base_url,
            max_retries=0,
            timeout=60.0,
            http_client=http_client,
        )

    async def close(self) -> None:
        await self.client.close()


class _BarePost(_Bare):
    async def call(self) -> None:
        body = {"model": "gpt-4", "messages": MESSAGES}
        await self.client.post("/chat/completions", body=body, cast_to=object)


class _BareTyped(_Bare):
    async def call(self) -> None:
        await self.client.chat.completions.create(model="gpt-4", messages=MESSAGES)


async def _cpu_ms_per_call(call: Callable[[], Awaitable[None]]) -> float:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one() for _ in range(2 * CONCURRENCY)))  # connections, imports
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(CALLS)))
    return (time.process_time() - started) * 1000 / CALLS


async def _measure(base_url: str) -> dict[str, list[float]]:
    variants: dict[str, _Variant] = {
        "ours": _Ours(base_url),
        "bare_post": _BarePost(base_url),
        "bare_typed": _BareTyped(base_url),
    }
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            variant = variants[name]
            variant.open()
            try:
                results[name].append(await _cpu_ms_per_call(variant.call))
            finally:
                await variant.close()
    return results


def main() -> None:
    from llm_orchestrator.providers.transport import default_transport

    with _fake_openai() as base_url:
        results = asyncio.run(_measure(base_url))
    transport = default_transport()
    for name, values in results.items():
        report(
            f"provider_call_{name}_cpu_ms",
            f"{statistics.median(values):.3f} (median of {ROUNDS} rounds of {CALLS} calls,"
            f" {CONCURRENCY} at a time, {transport})",
        )
    for anchor in ("bare_post", "bare_typed"):
        ratios = [ours / bare for ours, bare in zip(results["ours"], results[anchor], strict=True)]
        report(f"provider_call_ours_over_{anchor}", f"{statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
