"""Liveness and readiness (issue 10, defect 9), and SQL errors logged without their bound
parameters."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from outdial.app import create_app
from outdial.config import Settings
from outdial.db import create_engine
from outdial.health import READY_TIMEOUT_SECONDS
from tests.conftest import error_code
from tests.test_api_fuzz import _free_port


async def test_ready_and_live_with_a_database(client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


@pytest.fixture(params=["postgresql", "sqlite"])
async def unreachable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over a database it cannot reach: PostgreSQL on a port nobody listens on, or
    an SQLite file in a directory that does not exist."""
    url = {
        "postgresql": f"postgresql://postgres@127.0.0.1:{_free_port()}/outdial",
        "sqlite": f"sqlite:///{tmp_path / 'missing' / 'outdial.db'}",
    }[request.param]
    application = create_app(Settings(database_url=url))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://outdial.test") as c:
            yield c


async def test_live_but_not_ready_without_the_database(unreachable, caplog) -> None:
    assert (await unreachable.get("/healthz")).status_code == 200
    started = time.monotonic()
    response = await unreachable.get("/readyz")
    assert response.status_code == 503
    assert error_code(response) == "database_unreachable"
    assert time.monotonic() - started < READY_TIMEOUT_SECONDS + 1
    assert "not ready: the database cannot be reached" in caplog.text
    assert (await unreachable.get("/healthz")).status_code == 200


async def test_sql_errors_do_not_show_bound_parameters(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failed:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE n = :n"), {"n": "+15559990123"}
                )
    finally:
        await engine.dispose()
    assert "no_such_table" in str(failed.value)
    assert "+15559990123" not in str(failed.value)


def test_a_servers_sql_error_log_holds_no_numbers_or_key_digests(tmp_path: Path) -> None:
    """A real `outdial api` whose tables vanish under it: its error log names the failed
    statements, but not the phone numbers or the key digest bound to them."""
    env = {**os.environ, "OUTDIAL_DATABASE_URL": f"sqlite:///{tmp_path / 'outdial.db'}"}
    created = subprocess.run(
        [sys.executable, "-m", "outdial.cli", "tenant", "create", "--name", "logs"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = json.loads(created.stdout)["api_key"]
    digest = hashlib.sha256(key.encode()).hexdigest()
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "api", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {key}"}
        # A new connection for each request: the server closes one whose request failed.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=fresh
        ) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert http.get("/v1/auth/me").status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            with sqlite3.connect(tmp_path / "outdial.db") as db:
                db.execute("DROP TABLE dnc_entries")
            check = http.post("/v1/dnc/check", json={"phone_numbers": ["+15559990123"]})
            assert check.status_code == 500
            with sqlite3.connect(tmp_path / "outdial.db") as db:
                db.execute("DROP TABLE api_keys")
            assert http.get("/v1/auth/me").status_code == 500
    finally:
        server.terminate()
        server.wait(timeout=10)
    written = log.read_text()
    assert "no such table: dnc_entries" in written
    assert "no such table: api_keys" in written
    assert "+15559990123" not in written
    assert digest not in written
