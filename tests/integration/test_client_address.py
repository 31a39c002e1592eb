"""The client address behind rate limits and audit events: forwarded headers are believed
only from ``LLMO_TRUSTED_PROXIES``; on Lambda it is API Gateway's ``sourceIp``."""

from __future__ import annotations

import itertools

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.server import bootstrap, build_local_server
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.integration.lambda_support import load_handler, rest_event, seed_admin
from tests.support import FakeLambdaContext

BAD_LOGIN = {"username": ADMIN_USERNAME, "password": "wrong-password"}


def _client(app, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://t/api/v1")


async def _login_ips(admin_http: httpx.AsyncClient) -> list[str]:
    login = await admin_http.post(
        "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    events = await admin_http.get(
        "/audit/events",
        headers=headers,
        params={"event_type": "authentication", "result": "failure", "limit": 100},
    )
    return [e["ip_address"] for e in events.json()["events"]]


@pytest.fixture
async def frozen_server(settings: Settings):
    """The wall clock stands still, so the 60 requests before the 429 all fall in the same
    minute window however slowly a loaded machine sends them."""
    frozen = utcnow()
    local = build_local_server(settings, database_url=settings.database_url, clock=lambda: frozen)
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


async def test_a_rotating_forwarded_header_from_an_untrusted_peer_changes_nothing(frozen_server):
    server = frozen_server
    forged = (f"198.51.100.{n}" for n in itertools.count(1))
    statuses: list[int] = []
    async with _client(server.app, "127.0.0.1") as http:
        while 429 not in statuses and len(statuses) < 90:
            # Failed refreshes and logins both count against the client's address; one in
            # ten is a login (an argon2 verification each: the slow kind).
            if len(statuses) % 10 == 0:
                request = http.post("/auth/login", json=BAD_LOGIN, headers=forge(next(forged)))
            else:
                body = {"refresh_token": "not-a-refresh-token"}
                request = http.post("/auth/refresh", json=body, headers=forge(next(forged)))
            statuses.append((await request).status_code)
    async with _client(server.app, "192.0.2.200") as other:
        ips = await _login_ips(other)

    # Failed logins and refreshes count against the real peer, however the header rotates:
    # the limit (60 a minute) stops them. (A count that takes the database over a second is
    # let through, so a loaded machine may see a few more than 60 before the 429.)
    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {401}
    assert 60 <= len(statuses) - 1 < 90
    assert len(ips) == len(statuses) - 1  # each failure is in the trail ...
    assert set(ips) == {"127.0.0.1"}  # ... with the peer's address, not a forged one


def forge(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.fixture
async def behind_proxy(settings: Settings):
    trusted = settings.model_copy(update={"trusted_proxies": "127.0.0.1, 10.0.0.0/8"})
    local = build_local_server(trusted, database_url=trusted.database_url, environ={})
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


async def test_a_trusted_proxy_names_the_client_and_forged_hops_are_ignored(behind_proxy):
    async with _client(behind_proxy.app, "127.0.0.1") as via_proxy:
        # The client forged the first hop; the trusted proxies appended the last two.
        await via_proxy.post(
            "/auth/login",
            json=BAD_LOGIN,
            headers={"X-Forwarded-For": "203.0.113.66, 198.51.100.23, 10.1.2.3"},
        )
    async with _client(behind_proxy.app, "192.0.2.50") as direct:
        # Not a trusted peer: its header is ignored.
        await direct.post(
            "/auth/login", json=BAD_LOGIN, headers={"X-Forwarded-For": "203.0.113.99"}
        )
        ips = await _login_ips(direct)

    assert sorted(ips) == ["192.0.2.50", "198.51.100.23"]


def test_lambda_takes_the_source_ip_of_the_request_context(
    lambda_env: None,
    database_url: str,
) -> None:
    seed_admin(database_url)
    auth = load_handler("auth").handler

    response = auth(
        rest_event(
            "POST", "/api/v1/auth/login", BAD_LOGIN, headers={"X-Forwarded-For": "203.0.113.5"}
        ),
        FakeLambdaContext(),
    )

    assert response["statusCode"] == 401
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ip_address FROM audit_events WHERE event_type = 'authentication'"
        ).fetchall()
    assert rows == [("198.51.100.4",)]


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path) -> None:
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(data_dir=tmp_path, trusted_proxies="10.0.0.0/8, proxy.internal")
