"""The ``migrate`` Lambda: a CloudFormation custom resource that applies the migrations.

CloudFormation calls it on every deploy that changes the code (the stack puts a hash of the
package in the resource's properties) and waits for the answer, which the handler PUTs to
the request's pre-signed ``ResponseURL``; the API functions are updated only after a
SUCCESS. After the migrations it creates the bootstrap admin if it does not exist yet,
with the password from ``LLMO_ADMIN_PASSWORD_ARN`` (a secret the stack generates). The
handler answers in every case, inside the Lambda's time: an unanswered request would leave
the deploy hanging for an hour. ``Delete`` touches nothing: the data outlives the stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from llm_orchestrator.config import Settings, get_settings
from llm_orchestrator.runtime import build_runtime, resolve_database_url
from llm_orchestrator.store.migrate import apply_migrations

log = logging.getLogger(__name__)

PHYSICAL_ID = "llmo-database-migrations"
ANSWER_MARGIN_SECONDS = 15.0
"""Time kept back from the Lambda's timeout to answer CloudFormation."""

Responder = Callable[[str, dict[str, Any]], None]


def put_response(url: str, body: dict[str, Any]) -> None:
    """PUT the answer to CloudFormation's pre-signed S3 URL (no content type: it is signed)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _scrubbed(exc: BaseException, url: str | None) -> str:
    """The error's class and first line, without the URL or its password."""
    message = (str(exc).splitlines() or [""])[0]
    if url:
        message = message.replace(url, "<database url>")
        from urllib.parse import urlsplit

        password = urlsplit(url).password
        if password:
            message = message.replace(password, "***")
    return f"{type(exc).__name__}: {message}"[:500]


def ensure_admin(settings: Settings, url: str) -> bool:
    """Create the bootstrap admin unless it exists; True when it was created now."""
    if settings.admin_password_arn:
        from llm_orchestrator.secrets.deployment import read_secret_string

        password: str | None = read_secret_string(settings.admin_password_arn)
    elif settings.admin_password is not None:
        password = settings.admin_password.get_secret_value()
    else:
        return False  # nobody could learn a generated password here: no admin is made up

    async def create() -> bool:
        runtime = build_runtime(settings, database_url=url, serves_http=False)
        try:
            known = await runtime.users.get_by_username(settings.admin_username)
            await runtime.user_admin.ensure_admin(
                settings.admin_username, password, email=settings.admin_email
            )
            return known is None
        finally:
            await runtime.close()

    return asyncio.run(create())


def make_migrate_handler(
    settings_factory: Callable[[], Settings] = get_settings,
    respond: Responder = put_response,
    migrate: Callable[[str], list[str]] = apply_migrations,
) -> Callable[[dict[str, Any], Any], None]:
    def handler(event: dict[str, Any], context: Any) -> None:
        request_type = event.get("RequestType")
        body: dict[str, Any] = {
            "Status": "SUCCESS",
            "Reason": "",
            "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
            "StackId": event.get("StackId"),
            "RequestId": event.get("RequestId"),
            "LogicalResourceId": event.get("LogicalResourceId"),
            "Data": {},
        }
        if request_type in ("Create", "Update"):
            outcome: dict[str, Any] = {}
            url_holder: list[str] = []

            def run() -> None:
                try:
                    settings = settings_factory()
                    url = resolve_database_url(settings)
                    url_holder.append(url)
                    outcome["applied"] = migrate(url)
                    outcome["admin_created"] = ensure_admin(settings, url)
                except Exception as exc:  # answered as FAILED below
                    outcome["error"] = exc

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            remaining = context.get_remaining_time_in_millis() / 1000 if context else 300.0
            worker.join(max(remaining - ANSWER_MARGIN_SECONDS, 1.0))
            if worker.is_alive():
                body.update(Status="FAILED", Reason="migrations did not finish in time")
            elif "error" in outcome:
                reason = _scrubbed(outcome["error"], url_holder[0] if url_holder else None)
                body.update(Status="FAILED", Reason=f"migrations failed: {reason}")
            else:
                applied = outcome["applied"]
                created = " and the bootstrap admin created" if outcome["admin_created"] else ""
                body["Reason"] = f"{len(applied)} migration(s) applied{created}"
                body["Data"] = {"Applied": ",".join(applied)[:3000]}
        elif request_type != "Delete":
            body.update(Status="FAILED", Reason=f"unknown RequestType {request_type!r}")
        log.info("custom resource %s: %s %s", request_type, body["Status"], body["Reason"])
        respond(event["ResponseURL"], body)

    return handler
