"""``llmo``: the command line. ``llmo serve`` runs the whole API locally; the client
commands (``llmo login``, ``llmo run``, …) live in ``llm_orchestrator.client.cli`` and load
no server code."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from llm_orchestrator.extras import MissingExtra, importing

if TYPE_CHECKING:
    from llm_orchestrator.config import Settings

MAX_WORKERS = 64
"""``llmo serve --workers``'s ceiling (as ``LLMO_WORKERS``'s)."""


LOG_LEVEL_NAMES = ("critical", "error", "warning", "info", "debug", "trace")
"""``--log-level``'s names: uvicorn's (``uvicorn.config.LOG_LEVELS``), which gives each its
logging level."""


def _server_extra(settings: Any) -> str:
    """The extra a server command needs: with no database URL, the embedded one too."""
    return "server" if settings.database_url else "local"


def _serve(args: argparse.Namespace) -> int:
    from llm_orchestrator.config import Settings

    settings = Settings()
    extra = _server_extra(settings)
    uvicorn = importing(extra, "llmo serve", lambda: importlib.import_module("uvicorn"))
    server_module = importing(
        extra, "llmo serve", lambda: importlib.import_module("llm_orchestrator.server")
    )
    workers = args.workers if args.workers is not None else settings.workers
    level = uvicorn.config.LOG_LEVELS[args.log_level]
    server_module.apply_log_level(level)
    os.environ[server_module.WORKER_LOG_LEVEL] = str(level)
    if workers > 1:
        return _serve_workers(args, settings, workers, uvicorn, server_module)
    bootstrap, build_local_server = server_module.bootstrap, server_module.build_local_server
    server = build_local_server(settings)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        generated = await bootstrap(server.runtime)
        if generated:
            print(
                f"Created admin user '{settings.admin_username}' with password: {generated}\n"
                "This password is shown once; set LLMO_ADMIN_PASSWORD to choose your own.",
                flush=True,
            )
        # Schedule triggers fire from this process, unless EventBridge Scheduler does.
        if server.runtime.triggers.fires_in_process:
            server.scheduler.start()
        print(f"LLM Orchestrator listening on http://{args.host}:{args.port}/api/v1", flush=True)
        yield
        await server.scheduler.stop()
        await server.runtime.close()
        if not settings.database_url:
            from llm_orchestrator.store.embedded import release_embedded_postgres

            release_embedded_postgres(settings.data_dir)

    server.app.router.lifespan_context = lifespan
    uvicorn.run(server.app, **_uvicorn_options(args, settings))
    return 0


def _uvicorn_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """What ``llmo serve`` gives uvicorn, with one process or several."""
    from llm_orchestrator.api.http_protocol import EnvelopeH11Protocol

    return {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        # Off: uvicorn would otherwise take the client address from X-Forwarded-For sent by
        # any loopback peer; LLMO_TRUSTED_PROXIES decides instead.
        "proxy_headers": False,
        "http": EnvelopeH11Protocol,
        # Without a bound, a stop waits for every request in flight: an `async: false`
        # execute for as long as its execution runs.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
    }


_STOP_MARGIN = 10.0
"""Seconds a worker gets beyond its graceful shutdown before the supervisor kills it."""


def _supervisor_class(uvicorn: Any, deadline_seconds: float) -> Any:
    """uvicorn's ``Multiprocess``, waiting at most ``deadline_seconds`` for its workers to
    stop, then killing those still running (their executions resume elsewhere, as after any
    kill -9)."""
    import time

    multiprocess = importlib.import_module(f"{uvicorn.__name__}.supervisors.multiprocess")

    class Supervisor(multiprocess.Multiprocess):  # type: ignore[name-defined]
        def join_all(self) -> None:
            deadline = time.monotonic() + deadline_seconds
            for worker in self.processes:
                worker.process.join(max(0.0, deadline - time.monotonic()))
            for worker in self.processes:
                if worker.process.exitcode is None:
                    print(
                        f"worker {worker.pid} did not stop within {deadline_seconds:g} s:"
                        " killing it",
                        file=sys.stderr,
                        flush=True,
                    )
                    worker.process.kill()
                    worker.process.join()

    return Supervisor


def _serve_workers(
    args: argparse.Namespace, settings: Any, workers: int, uvicorn: Any, server_module: Any
) -> int:
    """``workers`` serving processes under uvicorn's supervisor (which restarts one that
    dies). This process prepares what must happen once (the embedded PostgreSQL, the
    migrations, the admin) before any worker starts, and releases the embedded server when
    the last worker has stopped."""
    import os
    import shutil
    import tempfile

    shared: str | None = None
    # One release of the embedded server, whatever stops this: a refusal, a failed admin
    # step after the server started, or the last worker's end.
    try:
        url, generated = server_module.prepare_workers(settings)
        try:
            server_module.check_connections(url, workers, settings.db_pool_max_size)
        except server_module.TooManyConnections as exc:
            print(f"llmo: {exc}", file=sys.stderr)
            return 2
        if generated:
            print(
                f"Created admin user '{settings.admin_username}' with password: {generated}\n"
                "This password is shown once; set LLMO_ADMIN_PASSWORD to choose your own.",
                flush=True,
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shared = tempfile.mkdtemp(prefix="serve-", dir=settings.data_dir)
        os.environ[server_module.WORKER_DATABASE_URL] = url
        os.environ[server_module.WORKER_METRICS_DIR] = os.path.join(shared, "http-metrics")
        print(
            f"LLM Orchestrator listening on http://{args.host}:{args.port}/api/v1"
            f" ({workers} workers)",
            flush=True,
        )
        os.environ[server_module.WORKER_PARENT_PID] = str(os.getpid())
        # uvicorn.run's multi-process path, with a supervisor whose wait for its workers
        # at shutdown has a deadline: the embedded PostgreSQL is stopped after it, and must
        # never be stopped under a worker still serving.
        config = uvicorn.Config(
            f"{server_module.__name__}:worker_app",
            factory=True,
            workers=workers,
            **_uvicorn_options(args, settings),
        )
        supervisor = _supervisor_class(uvicorn, settings.shutdown_grace_seconds + _STOP_MARGIN)
        supervisor(config, sockets=[config.bind_socket()]).run()
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)
        if not settings.database_url:
            from llm_orchestrator.store.embedded import release_embedded_postgres

            release_embedded_postgres(settings.data_dir)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from llm_orchestrator.config import Settings

    settings = Settings()
    server_module = importing(
        _server_extra(settings),
        "llmo migrate",
        lambda: importlib.import_module("llm_orchestrator.server"),
    )
    server_module.prepare_database(settings)
    print("migrations up to date")
    return 0


def _compile(args: argparse.Namespace) -> int:
    import json

    from llm_orchestrator.compiler import compile_workflow, to_json
    from llm_orchestrator.config import Settings
    from llm_orchestrator.errors import ValidationFailed
    from llm_orchestrator.workflows.validation import parse_definition

    try:
        with open(args.path, encoding="utf-8") as handle:
            data = json.load(handle)
        definition = parse_definition(data)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"llmo compile: {exc}", file=sys.stderr)
        return 2
    except ValidationFailed as exc:
        for error in exc.errors:
            print(f"{error.field}: {error.message}", file=sys.stderr)
        return 2
    settings = Settings()
    asl = compile_workflow(
        definition,
        step_runner_arn=args.step_runner_arn or settings.step_runner_arn,
        vector_runner_arn=args.vector_runner_arn or settings.vector_runner_arn,
    )
    print(json.dumps(json.loads(to_json(asl)), indent=2) if args.pretty else to_json(asl))
    return 0


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WORKERS}, not {count}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmo", description="LLM Orchestrator")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (embedded PostgreSQL by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVEL_NAMES)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="serving processes sharing the port and the database (default: LLMO_WORKERS, 1)",
    )
    serve.set_defaults(func=_serve)

    compile_ = sub.add_parser("compile", help="print the state machine (ASL) of a workflow file")
    compile_.add_argument("path", help="workflow definition JSON, as POSTed to /workflows")
    compile_.add_argument("--step-runner-arn", help="the step-runner Lambda ARN to invoke")
    compile_.add_argument(
        "--vector-runner-arn",
        help="the Lambda ARN vector_upsert/vector_search steps invoke (default: the step runner)",
    )
    compile_.add_argument("--pretty", action="store_true", help="indent the JSON")
    compile_.set_defaults(func=_compile)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=_migrate)

    from llm_orchestrator.client.cli import add_client_commands

    add_client_commands(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace | None:
    """The parsed command line; None after a usage error that asked for ``--json``.

    argparse prints its usage errors to stderr; a script that passed ``--json`` reads
    stdout, so it gets the same ``{"code": "usage_error", "message": …}`` as the commands'
    own usage errors instead (exit code 2 either way).
    """
    if "--json" not in arguments:
        return parser.parse_args(arguments)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return parser.parse_args(arguments)
    except SystemExit as exit_:
        if exit_.code != 2:
            sys.stderr.write(captured.getvalue())
            raise
    from llm_orchestrator.client.cli.output import Output

    said = [line for line in captured.getvalue().splitlines() if ": error: " in line]
    message = said[-1].split(": error: ", 1)[1] if said else "invalid command line"
    Output(as_json=True).usage_error(message)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The embedded server logs every pg_ctl command line at INFO; only its problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parse(build_parser(), arguments)
    if args is None:
        return 2
    try:
        result: int = args.func(args)
    except MissingExtra as exc:
        print(f"llmo: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
