"""`llmo serve` as a new user meets it: the bootstrap admin's generated password is printed
on the first start only, and works. (Its embedded PostgreSQL: ``test_embedded_orphan.py``.)"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.conftest import JWT_SECRET
from tests.integration.serve_support import ServeProcess, serve_env


def test_first_start_prints_a_working_admin_password_once(database_url: str, tmp_path: Path):
    env = serve_env(
        LLMO_DATABASE_URL=database_url, LLMO_DATA_DIR=str(tmp_path), LLMO_JWT_SECRET=JWT_SECRET
    )

    first = ServeProcess(env, capture=True).start()
    first_output = first.stop()
    line = next(line for line in first_output.splitlines() if "with password:" in line)
    password = line.rsplit(": ", 1)[1].strip()
    second = ServeProcess(env, capture=True).start()
    try:
        login = httpx.post(
            f"{second.base_url}/auth/login",
            json={"username": "admin", "password": password},
            timeout=60,  # an argon2 verification, slow on a loaded machine
        )
    finally:
        second_output = second.stop()

    assert "Created admin user 'admin'" in first_output
    assert "with password:" not in second_output
    assert login.status_code == 200, login.text
    assert f"listening on http://127.0.0.1:{second.port}" in second_output
