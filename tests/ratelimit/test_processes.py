"""Rate limits hold across API processes on PostgreSQL: two real `outdial api` servers on one
database share every counter (issue 10, defect 7)."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import error_code

# Multi-process tests run one after another on one xdist worker (make test runs two): each
# starts several outdial processes of its own, and two at once would starve both.
pytestmark = pytest.mark.xdist_group("processes")

KEY_LIMIT = 10
WINDOW_SECONDS = 60  # long enough that however slow the machine, a burst fits in one window
FAILURE_LIMIT = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def api_processes(database_url: str, workdir: Path, count: int) -> Iterator[list[str]]:
    """`count` real `outdial api` servers on the database, started side by side."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    env |= {
        "OUTDIAL_DATABASE_URL": database_url,
        "OUTDIAL_RATE_LIMIT_PER_SECRET_KEY": str(KEY_LIMIT),
        "OUTDIAL_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "OUTDIAL_AUTH_FAILURES_PER_IP": str(FAILURE_LIMIT),
        "OUTDIAL_RATE_LIMIT_PER_IP": "100000",
    }
    started = []
    try:
        for n in range(count):
            port, log = free_port(), workdir / f"api-{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "outdial.cli", "api", "--port", str(port)],
                    env=env,
                    cwd=workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append((process, f"http://127.0.0.1:{port}", log))
        for process, base, log in started:
            wait_healthy(process, base, log)
        yield [base for _, base, _ in started]
    finally:
        for process, _, _ in started:
            process.terminate()
        for process, _, _ in started:
            process.wait(10)


def wait_healthy(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"outdial api exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"outdial api did not start:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
async def two_apis(
    database_url: str, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    if backend != "postgresql":
        pytest.skip("SQLite deployments are one process: their counters live in its memory")
    with api_processes(database_url, tmp_path_factory.mktemp("apis"), 2) as (a, b):
        async with httpx.AsyncClient(base_url=a) as first, httpx.AsyncClient(base_url=b) as second:
            yield first, second


async def test_a_keys_limit_is_shared_by_both_processes(two_apis, make_tenant) -> None:
    first, second = two_apis
    tenant = await make_tenant()
    headers = {"Authorization": f"Bearer {tenant.key}"}
    await asyncio.gather(first.get("/healthz"), second.get("/healthz"))  # connections up

    async def ask(api: httpx.AsyncClient) -> tuple[httpx.AsyncClient, httpx.Response]:
        return api, await api.get("/v1/auth/me", headers=headers)

    answers = await asyncio.gather(*(ask(api) for api in (first, second) * 2 * KEY_LIMIT))
    allowed = [api for api, r in answers if r.status_code == 200]
    refused = [(api, r) for api, r in answers if r.status_code != 200]
    # Each process was asked 2 * KEY_LIMIT times: counted apart, each would have let
    # KEY_LIMIT through, 2 * KEY_LIMIT in all. Shared, both together let KEY_LIMIT through (one
    # more if the burst straddles a window boundary: the sliding window weighs the previous
    # window's hits by its remaining overlap).
    assert KEY_LIMIT <= len(allowed) <= KEY_LIMIT + 1, len(allowed)
    assert {api for api, _ in refused} <= {first, second}
    for _, response in refused:
        assert response.status_code == 429, response.text
        assert error_code(response) == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1


async def test_a_lockout_on_one_process_holds_on_the_other(two_apis, make_tenant) -> None:
    first, second = two_apis
    tenant = await make_tenant()
    for n in range(FAILURE_LIMIT):
        api = (first, second)[n % 2]
        guess = await api.get("/v1/auth/me", headers={"Authorization": f"Bearer sb_secret_{n}"})
        assert guess.status_code == 401
    for api in (first, second):
        response = await api.get("/v1/auth/me", headers={"Authorization": f"Bearer {tenant.key}"})
        assert response.status_code == 429, response.text
        assert response.json()["error"]["details"]["scope"] == "auth_failures"
