"""``llmo``: the command line. ``llmo serve`` runs the whole API locally."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llm_orchestrator.config import Settings
    from llm_orchestrator.server import bootstrap, build_local_server

    settings = Settings()
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
        print(f"LLM Orchestrator listening on http://{args.host}:{args.port}/api/v1", flush=True)
        yield
        await server.runtime.close()

    server.app.router.lifespan_context = lifespan
    uvicorn.run(server.app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from llm_orchestrator.config import Settings
    from llm_orchestrator.server import prepare_database

    prepare_database(Settings())
    print("migrations up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmo", description="LLM Orchestrator")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (embedded PostgreSQL by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
