"""``AsyncClient``: the asyncio SDK on ``httpx.AsyncClient``; the same surface as ``Client``
with ``await`` (listings are ``async for`` iterators)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, overload

import httpx

from llm_orchestrator.client._core import (
    API_KEY_ENV,
    DEFAULT_VERSION,
    LONG_POLL_SECONDS,
    MAX_RETRY_SLEEP,
    PAGE_SIZE,
    POLL_FIRST,
    RETRY_STATUSES,
    USER_AGENT,
    Call,
    Credentials,
    M,
    changed,
    clean_params,
    connection_error,
    definition_body,
    next_poll_interval,
    page_items,
    parse,
    resolve_base_url,
    retry_delay,
    segment,
)
from llm_orchestrator.client.errors import (
    Unauthorized,
    ValidationError,
    WaitTimeout,
    error_from_response,
)
from llm_orchestrator.client.models import (
    ApiKey,
    AuditEvent,
    AuditVerification,
    Checkpoint,
    CreatedApiKey,
    Execution,
    ExecutionAccepted,
    Health,
    SecretStored,
    SystemConfig,
    SystemStats,
    Tokens,
    User,
    Workflow,
    WorkflowSummary,
)

log = logging.getLogger("llm_orchestrator.client")


class AsyncClient:
    """The LLM Orchestrator API, for asyncio.

    Credentials, in order: ``api_key``; ``token`` (with ``refresh_token`` to renew it);
    ``username`` + ``password`` (logs in on first use); else ``LLMO_API_KEY``. The URL
    defaults to ``LLMO_URL``, then ``http://127.0.0.1:8080/api/v1``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        refresh_token: str | None = None,
        token_expires_at: float | None = None,
        on_tokens: Callable[[Tokens], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if api_key is None and token is None and username is None:
            api_key = os.environ.get(API_KEY_ENV) or None
        self.base_url = resolve_base_url(base_url)
        self.max_retries = max(0, max_retries)
        self._credentials = Credentials(
            api_key=api_key,
            token=token,
            refresh_token=refresh_token,
            token_expires_at=token_expires_at,
            username=username,
            password=password,
            on_tokens=on_tokens,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )
        self._renew_lock = asyncio.Lock()
        self._long_poll: bool | None = None
        """Whether the server holds a status call given ``wait`` (None: not known yet)."""
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.workflows = Workflows(self)
        self.executions = Executions(self)
        self.checkpoints = Checkpoints(self)
        self.state = State(self)
        self.keys = Keys(self)
        self.audit = Audit(self)
        self.admin = Admin(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- authentication -----------------------------------------------------------------

    @property
    def refresh_token(self) -> str | None:
        """The newest refresh token (they rotate on every refresh)."""
        return self._credentials.refresh_token

    @property
    def access_token(self) -> str | None:
        return self._credentials.access_token

    async def login(self, username: str | None = None, password: str | None = None) -> Tokens:
        creds = self._credentials
        creds.username = username or creds.username
        creds.password = password or creds.password
        if not creds.can_log_in:
            raise ValueError("login needs a username and a password")
        body = await self.request(
            Call(
                "POST",
                "auth/login",
                json={"username": creds.username, "password": creds.password},
                authenticated=False,
            )
        )
        tokens = parse(Tokens, body)
        creds.store(tokens)
        return tokens

    async def refresh(self) -> Tokens:
        creds = self._credentials
        if not creds.refresh_token:
            raise ValueError("no refresh token to refresh with")
        body = await self.request(
            Call(
                "POST",
                "auth/refresh",
                json={"refresh_token": creds.refresh_token},
                authenticated=False,
            )
        )
        tokens = parse(Tokens, body)
        creds.store(tokens)
        return tokens

    async def logout(self) -> bool:
        """End this client's login session on the server (``POST /auth/logout``: its
        refresh and access tokens stop working everywhere), then forget its tokens.

        An expired access token is renewed first with the refresh token, since only a
        token of the session can end it. A session that has already ended (expired,
        revoked, logged out elsewhere) is not an error. Returns whether the server ended
        a session just now. An API key has no session: revoke it with ``keys.revoke``.
        """
        creds = self._credentials
        if creds.access_token is None and creds.refresh_token is None:
            if creds.api_key:
                raise ValueError("an API key has no session to log out of; revoke the key")
            return False
        try:
            await self.request(Call("POST", "auth/logout", retry_connection_errors=True))
            ended = True
        except Unauthorized:
            ended = False  # the session had already ended
        creds.forget_tokens()
        return ended

    async def _renew(self) -> None:
        creds = self._credentials
        if creds.refresh_token:
            try:
                await self.refresh()
                return
            except Unauthorized:
                if not creds.can_log_in:
                    raise
        if creds.can_log_in:
            await self.login()

    async def _authenticate(self, stale_token: str | None = None) -> None:
        creds = self._credentials
        async with self._renew_lock:
            if stale_token is not None and creds.access_token != stale_token:
                return  # another thread renewed it meanwhile
            if stale_token is not None or creds.expiring():
                await self._renew()
            elif creds.needs_token():
                await self._renew()

    # -- transport ------------------------------------------------------------------------

    async def request(self, call: Call) -> Any:
        """Send one call (with retries and token renewal); the decoded JSON body, or None."""
        if call.authenticated:
            await self._authenticate()
        sent_with = self._credentials.access_token
        response = await self._send(call)
        if (
            response.status_code == 401
            and call.authenticated
            and sent_with is not None
            and self._credentials.can_renew
        ):
            await self._authenticate(stale_token=sent_with)
            response = await self._send(call)
        if not (response.is_success or response.status_code in call.ok_statuses):
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            headers = dict(call.headers)
            if call.authenticated:
                headers.update(self._credentials.headers())
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers=headers,
                    timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if attempt >= self.max_retries or not call.may_retry_connection:
                    raise connection_error(exc, self.base_url) from exc
                delay = retry_delay(None, attempt)
                log.info("retrying %s %s in %.1fs: %s", call.method, call.path, delay, exc)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                    return response
                delay = retry_delay(response, attempt)
                if delay > MAX_RETRY_SLEEP:
                    return response
                log.info(
                    "retrying %s %s in %.1fs after %d (request %s)",
                    call.method,
                    call.path,
                    delay,
                    response.status_code,
                    response.headers.get("X-Request-ID"),
                )
            await self._sleep(delay)
            attempt += 1

    async def _get_model(self, model: type[M], call: Call) -> M:
        return parse(model, await self.request(call))

    async def _paginate(
        self, model: type[M], path: str, key: str, params: Mapping[str, Any], page_size: int
    ) -> AsyncIterator[M]:
        offset = 0
        while True:
            query = {**clean_params(params), "limit": page_size, "offset": offset}
            items, total = page_items(await self.request(Call("GET", path, params=query)), key)
            for item in items:
                yield parse(model, item)
            offset += len(items)
            if not items or offset >= total:
                return

    # -- endpoints without a resource ------------------------------------------------------

    async def health(self) -> Health:
        """``GET /health``; an unhealthy server answers 503 with the same report."""
        return await self._get_model(Health, Call("GET", "health", ok_statuses=frozenset({503})))


class _Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client


class Workflows(_Resource):
    async def create(self, definition: Mapping[str, Any] | None = None, **fields: Any) -> Workflow:
        body = definition_body(definition, fields)
        return await self._c._get_model(Workflow, Call("POST", "workflows", json=body))

    async def get(self, workflow_id: str) -> Workflow:
        return await self._c._get_model(Workflow, Call("GET", f"workflows/{segment(workflow_id)}"))

    async def update(
        self, workflow_id: str, definition: Mapping[str, Any] | None = None, **fields: Any
    ) -> Workflow:
        body = definition_body(definition, fields)
        return await self._c._get_model(
            Workflow, Call("PUT", f"workflows/{segment(workflow_id)}", json=body)
        )

    async def delete(self, workflow_id: str) -> None:
        await self._c.request(Call("DELETE", f"workflows/{segment(workflow_id)}"))

    def list(
        self, name: str | None = None, version: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[WorkflowSummary]:
        """Every matching workflow (``name`` is a partial match), across pages."""
        params = {"name": name, "version": version}
        return self._c._paginate(WorkflowSummary, "workflows", "workflows", params, page_size)

    async def find(self, name: str, version: str | None = None) -> WorkflowSummary | None:
        """The workflow named exactly ``name`` (at ``version``, else the newest created)."""
        matches = [w async for w in self.list(name=name, version=version) if w.name == name]
        if not matches:
            return None
        return max(matches, key=lambda w: (w.created_at is not None, w.created_at))

    async def apply(self, definition: Mapping[str, Any]) -> tuple[Workflow, bool]:
        """Create the workflow, or update the one with the same name and version.

        Returns the workflow and whether it was created. A definition without a
        ``version`` is the server's default version, ``"1.0"``, as it would be created.
        """
        name, version = definition.get("name"), definition.get("version", DEFAULT_VERSION)
        existing = None
        if isinstance(name, str) and isinstance(version, str):
            existing = await self.find(name, version)
        if existing is None:
            return await self.create(definition), True
        return await self.update(existing.id, definition), False

    @overload
    async def execute(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: Literal[False] = False,
        timeout_override: int | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionAccepted: ...

    @overload
    async def execute(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: Literal[True],
        timeout_override: int | None = None,
        idempotency_key: str | None = None,
    ) -> Execution: ...

    async def execute(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: bool = False,
        timeout_override: int | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionAccepted | Execution:
        """Start an execution; with ``wait=True``, return it once it has ended.

        With an ``idempotency_key`` the call is safe to retry, even after a lost
        connection: the server answers a repeat with the original execution.
        """
        body: dict[str, Any] = {"inputs": dict(inputs or {}), "async": True}
        if timeout_override is not None:
            body["timeout_override"] = timeout_override
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        accepted = await self._c._get_model(
            ExecutionAccepted,
            Call(
                "POST",
                f"workflows/{segment(workflow_id)}/execute",
                json=body,
                headers=headers,
                retry_connection_errors=idempotency_key is not None,
            ),
        )
        if not wait:
            return accepted
        return await self._c.executions.wait(accepted.workflow_id, accepted.execution_id)

    async def state_machine(self, workflow_id: str) -> dict[str, Any]:
        body = await self._c.request(Call("GET", f"workflows/{segment(workflow_id)}/state-machine"))
        definition: dict[str, Any] = body["definition"]
        return definition


class Executions(_Resource):
    async def get(self, workflow_id: str, execution_id: str) -> Execution:
        return await self._status(workflow_id, execution_id)

    async def _status(
        self, workflow_id: str, execution_id: str, wait: int | None = None
    ) -> Execution:
        params: dict[str, Any] = {"executionId": execution_id}
        timeout = None
        if wait is not None:
            params["wait"] = wait
            timeout = wait + 30.0
        return await self._c._get_model(
            Execution,
            Call(
                "GET",
                f"workflows/{segment(workflow_id)}/status",
                params=params,
                timeout=timeout,
            ),
        )

    async def wait(
        self,
        workflow_id: str,
        execution_id: str,
        timeout: float | None = None,
        on_update: Callable[[Execution], Awaitable[None] | None] | None = None,
    ) -> Execution:
        """Until the execution ends (completed, failed, cancelled, timed out).

        Uses the server's long-poll (``wait``) when it honours one, else polls with backoff.
        ``on_update`` sees the execution each time its status or a step's status changes.
        Raises ``WaitTimeout`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = POLL_FIRST
        last: Execution | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            execution: Execution | None = None
            long_polled = False
            if last is not None and self._c._long_poll is not False:
                if remaining is None or remaining >= 2:
                    execution = await self._long_poll_once(
                        workflow_id, execution_id, last, remaining
                    )
                    long_polled = execution is not None
            if execution is None:
                execution = await self._status(workflow_id, execution_id)
            if on_update is not None and changed(last, execution):
                outcome = on_update(execution)
                if inspect.isawaitable(outcome):
                    await outcome
            last = execution
            if execution.is_terminal:
                return execution
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(
                    f"Execution {execution_id} is still {execution.status} after {timeout}s",
                    code="timeout",
                    details={"status": execution.status},
                )
            # A long-poll answer came on a change (or the server holds calls): ask again at
            # once, the server waits for the next change. Plain polling backs off.
            if not long_polled or self._c._long_poll is False:
                await self._c._sleep(interval if remaining is None else min(interval, remaining))
                interval = next_poll_interval(interval)

    async def _long_poll_once(
        self, workflow_id: str, execution_id: str, last: Execution, remaining: float | None
    ) -> Execution | None:
        """One status call with ``wait``, learning whether the server honours it.

        A server that holds the call answers on a change or after ``wait`` seconds; one that
        ignores the parameter answers at once with nothing changed, and from then on the
        client polls. One that refuses the parameter (400) is polled too.
        """
        seconds = LONG_POLL_SECONDS if remaining is None else min(LONG_POLL_SECONDS, int(remaining))
        started = time.monotonic()
        try:
            execution = await self._status(workflow_id, execution_id, wait=seconds)
        except ValidationError:
            self._c._long_poll = False
            return None
        if time.monotonic() - started >= seconds / 2:
            self._c._long_poll = True
        elif not changed(last, execution):
            self._c._long_poll = False
        return execution

    async def _control(self, action: str, workflow_id: str, execution_id: str) -> Execution:
        return await self._c._get_model(
            Execution,
            Call(
                "POST",
                f"workflows/{segment(workflow_id)}/{action}",
                params={"executionId": execution_id},
            ),
        )

    async def pause(self, workflow_id: str, execution_id: str) -> Execution:
        return await self._control("pause", workflow_id, execution_id)

    async def resume(self, workflow_id: str, execution_id: str) -> Execution:
        return await self._control("resume", workflow_id, execution_id)

    async def cancel(self, workflow_id: str, execution_id: str) -> Execution:
        return await self._control("cancel", workflow_id, execution_id)


class Checkpoints(_Resource):
    def list(
        self, workflow_id: str, execution_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[Checkpoint]:
        return self._c._paginate(
            Checkpoint,
            f"state/{segment(workflow_id)}/checkpoints",
            "checkpoints",
            {"executionId": execution_id},
            page_size,
        )

    async def create(
        self, workflow_id: str, execution_id: str, step_id: str | None = None
    ) -> Checkpoint:
        body: dict[str, Any] = {"executionId": execution_id}
        if step_id is not None:
            body["stepId"] = step_id
        return await self._c._get_model(
            Checkpoint, Call("POST", f"state/{segment(workflow_id)}/checkpoints", json=body)
        )


class State(_Resource):
    async def get(self, workflow_id: str, execution_id: str) -> Execution:
        return await self._c._get_model(
            Execution,
            Call("GET", f"state/{segment(workflow_id)}", params={"executionId": execution_id}),
        )

    async def restore(self, workflow_id: str, checkpoint_id: str) -> Execution:
        return await self._c._get_model(
            Execution,
            Call(
                "POST",
                f"state/{segment(workflow_id)}/restore",
                json={"checkpointId": checkpoint_id},
            ),
        )


class Keys(_Resource):
    async def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        expires_in_days: int | None = None,
        user_id: str | None = None,
    ) -> CreatedApiKey:
        body = clean_params(
            {
                "name": name,
                "scopes": [*scopes],
                "expires_in_days": expires_in_days,
                "user_id": user_id,
            }
        )
        return await self._c._get_model(CreatedApiKey, Call("POST", "auth/keys", json=body))

    def list(self, *, page_size: int = PAGE_SIZE) -> AsyncIterator[ApiKey]:
        return self._c._paginate(ApiKey, "auth/keys", "keys", {}, page_size)

    async def revoke(self, key_id: str) -> None:
        await self._c.request(Call("DELETE", f"auth/keys/{segment(key_id)}"))


class Audit(_Resource):
    def events(
        self,
        *,
        user_id: str | None = None,
        event_type: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        result: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[AuditEvent]:
        """Audit events matching every filter given (times: ISO 8601 with a zone)."""
        filters = {
            "user_id": user_id,
            "event_type": event_type,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "start_time": start_time,
            "end_time": end_time,
            "result": result,
        }
        return self._c._paginate(AuditEvent, "audit/events", "events", filters, page_size)

    async def get(self, event_id: str) -> AuditEvent:
        return await self._c._get_model(
            AuditEvent, Call("GET", f"audit/events/{segment(event_id)}")
        )

    async def verify(self) -> AuditVerification:
        return await self._c._get_model(AuditVerification, Call("GET", "audit/verify"))


class Users(_Resource):
    def list(self, *, page_size: int = PAGE_SIZE) -> AsyncIterator[User]:
        return self._c._paginate(User, "admin/users", "users", {}, page_size)

    async def create(
        self,
        username: str,
        email: str,
        password: str,
        roles: Sequence[str] | None = None,
        tier: str | None = None,
    ) -> User:
        body = clean_params(
            {
                "username": username,
                "email": email,
                "password": password,
                "roles": None if roles is None else [*roles],
                "tier": tier,
            }
        )
        return await self._c._get_model(User, Call("POST", "admin/users", json=body))


class Admin(_Resource):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client)
        self.users = Users(client)

    async def stats(self) -> SystemStats:
        return await self._c._get_model(SystemStats, Call("GET", "admin/stats"))

    async def config(self) -> SystemConfig:
        return await self._c._get_model(SystemConfig, Call("GET", "admin/config"))

    async def set_secret(
        self, key: str, value: str, ttl_seconds: int | None = None
    ) -> SecretStored:
        body = clean_params({"key": key, "value": value, "ttl_seconds": ttl_seconds})
        return await self._c._get_model(SecretStored, Call("POST", "admin/secrets", json=body))
