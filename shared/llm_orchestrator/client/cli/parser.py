"""The argument parsers of the client commands (argparse only: cheap to import)."""

from __future__ import annotations

import argparse
from typing import Any


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="API base URL (default: $LLMO_URL, the logged-in URL, or 127.0.0.1:8080)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def _command(
    sub: Any, name: str, handler: str, help_text: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, parents=[common])
    parser.set_defaults(func=_dispatch, handler=handler)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from llm_orchestrator.client.cli import run_client_command

    return run_client_command(args)


def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _execution_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("execution", metavar="EXECUTION", help="execution id")
    parser.add_argument(
        "-w",
        "--workflow",
        help="workflow id or name[@version] (default: the one `llmo run` started it from)",
    )


def add_client_commands(sub: Any) -> None:
    common = _common()

    login = _command(sub, "login", "login", "log in and keep the tokens for later commands", common)
    login.add_argument("--username", "-u", help="prompted for when omitted")
    _command(sub, "logout", "logout", "forget the stored tokens", common)

    workflows = _group(sub, "workflows", "create, list, show and delete workflows")
    apply = _command(
        workflows, "apply", "workflows_apply", "create or update (by name + version)", common
    )
    apply.add_argument("-f", "--file", required=True, help="definition file, JSON or YAML")
    listing = _command(workflows, "list", "workflows_list", "list workflows", common)
    listing.add_argument("--name", help="partial match")
    listing.add_argument("--version")
    for name, handler, text in (
        ("get", "workflows_get", "show a workflow's definition"),
        ("delete", "workflows_delete", "delete a workflow"),
    ):
        parser = _command(workflows, name, handler, text, common)
        parser.add_argument("workflow", metavar="WORKFLOW", help="id or name[@version]")

    run = _command(sub, "run", "run", "run a workflow and show its steps live", common)
    run.add_argument("workflow", metavar="WORKFLOW", help="id or name[@version]")
    run.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input (repeatable); KEY:=JSON passes a JSON value",
    )
    run.add_argument("-f", "--inputs-file", help="inputs as a JSON or YAML object")
    run.add_argument("--detach", action="store_true", help="start it and print its id")
    run.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    run.add_argument("--timeout-override", type=int, help="the execution's own timeout")
    run.add_argument("--idempotency-key", help="retry-safe start: same key, same execution")

    executions = _group(sub, "executions", "status and control of executions")
    for name, text in (
        ("status", "show an execution"),
        ("pause", "pause an execution"),
        ("resume", "resume a paused execution"),
        ("cancel", "cancel an execution"),
    ):
        _execution_args(_command(executions, name, f"executions_{name}", text, common))

    checkpoints = _group(sub, "checkpoints", "checkpoints of an execution")
    _execution_args(
        _command(checkpoints, "list", "checkpoints_list", "list an execution's checkpoints", common)
    )

    restore = _command(sub, "restore", "restore", "restore an execution from a checkpoint", common)
    restore.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint id")
    restore.add_argument(
        "-w", "--workflow", help="workflow id or name (default: from `checkpoints list`)"
    )

    keys = _group(sub, "keys", "API keys")
    create = _command(keys, "create", "keys_create", "create an API key (shown once)", common)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help="e.g. workflow:read, workflow:execute (repeatable)",
    )
    create.add_argument("--expires-in-days", type=int)
    create.add_argument("--user-id", help="admins: mint the key for this user")
    _command(keys, "list", "keys_list", "list your API keys", common)
    revoke = _command(keys, "revoke", "keys_revoke", "revoke an API key", common)
    revoke.add_argument("key_id", metavar="KEY_ID")

    audit = _group(sub, "audit", "the audit trail (admin)")
    events = _command(audit, "events", "audit_events", "query audit events", common)
    for flag in ("--user-id", "--event-type", "--resource-type", "--resource-id"):
        events.add_argument(flag)
    events.add_argument("--start-time", "--since", help="ISO 8601 with a zone")
    events.add_argument("--end-time", "--until", help="ISO 8601 with a zone")
    events.add_argument("--result", choices=["success", "failure", "partial_success"])
    events.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _command(audit, "verify", "audit_verify", "check the audit hash chain", common)

    secrets = _group(sub, "secrets", "provider secrets (admin)")
    set_secret = _command(
        secrets,
        "set",
        "secrets_set",
        "store a secret; the value is read from a prompt or stdin",
        common,
    )
    set_secret.add_argument("key", metavar="KEY", help="e.g. OPENAI_API_KEY")
    set_secret.add_argument("--ttl", type=int, dest="ttl_seconds", help="expire after seconds")
