"""Request size limits and body timeouts (issue 10, defect 4): 413 from Content-Length before
the body is read and while a chunked body is read, 408 for a body that stalls or trickles,
streamed CSV bodies limited per record, not in total. What depends on the socket is tested
against a real `outdial api` process."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from outdial.app import create_app
from outdial.config import Settings
from tests.conftest import error_code
from tests.test_api_fuzz import _free_port

IDLE, DEADLINE = 0.5, 1.5
DEFAULT_LIMIT = Settings().max_body_bytes


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    headers: dict[str, str]
    campaign_id: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _outdial(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "outdial.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`outdial api` on a free port over a fresh SQLite file, with short body timeouts and
    a tenant whose draft campaign takes contacts."""
    workdir = tmp_path_factory.mktemp("limits")
    env = {
        **os.environ,
        "OUTDIAL_DATABASE_URL": f"sqlite:///{workdir / 'outdial.db'}",
        "OUTDIAL_BODY_IDLE_SECONDS": str(IDLE),
        "OUTDIAL_BODY_DEADLINE_SECONDS": str(DEADLINE),
    }
    key = json.loads(_outdial(env, workdir, "tenant", "create", "--name", "limits"))["api_key"]
    port = _free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "api", "--port", str(port)],
            env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            http.post("/v1/numbers", json={"phone_number": "+15559990000"}).raise_for_status()
            agent = http.post("/v1/agents", json={"name": "a"}).raise_for_status().json()
            campaign = http.post(
                "/v1/campaigns",
                json={"agent_id": agent["id"], "name": "c", "call_from_number": "+15559990000"},
            ).raise_for_status()
        yield Server("127.0.0.1", port, headers, campaign.json()["campaign_id"])
    finally:
        process.terminate()
        process.wait(timeout=10)


class Exchange:
    """One raw HTTP/1.1 connection: what we send, and everything the server answers.

    A plain socket rather than asyncio's streams: a server that answers 413 and closes with
    our unread body still arriving makes its kernel send a reset, and a StreamReader that has
    seen the reset refuses to hand over the answer it already holds. The kernel keeps
    received bytes readable after a reset, so reading the socket itself sees the answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _read(self, within: float) -> bytes:
        return await asyncio.wait_for(
            asyncio.get_running_loop().sock_recv(self.sock, 65536), within
        )

    async def _read_until(self, enough: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not enough():
            chunk = await self._read(deadline - time.monotonic())
            assert chunk, f"closed before a whole answer: {bytes(self.received)!r}"
            self.received += chunk

    async def answer(self, within: float) -> tuple[int, dict[str, Any], bool]:
        """(status, JSON body, whether the server then closed the connection)."""
        started = time.monotonic()
        await self._read_until(lambda: b"\r\n\r\n" in self.received, within)
        raw, _, rest = bytes(self.received).partition(b"\r\n\r\n")
        head = raw.decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        length = int(fields["content-length"])
        self.received[:] = rest
        await self._read_until(
            lambda: len(self.received) >= length, within - (time.monotonic() - started)
        )
        body = bytes(self.received[:length])
        try:
            # Long enough for a server starved of CPU: a server that closes answers at once.
            closed = await self._read(10) == b""
        except ConnectionError:
            closed = True  # a reset (see the class's docstring): closed all the same
        except TimeoutError:
            closed = False
        return status, json.loads(body), closed


@pytest.fixture
async def connection(server: Server) -> AsyncIterator[Exchange]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
        yield Exchange(sock)
    finally:
        sock.close()


def request_head(server: Server, path: str, content_type: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {server.host}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in {**server.headers, **headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def contacts_of(server: Server) -> list[Any]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http:
        path = f"/v1/campaigns/{server.campaign_id}/contacts"
        return (await http.get(path)).raise_for_status().json()["data"]


async def test_announced_gigabyte_is_413_before_the_body_is_read(server, connection) -> None:
    head = request_head(
        server, "/v1/calls/batch", "application/json", **{"Content-Length": "1000000000"}
    )
    await connection.send(head + b'{"to": [')
    # 413 and not the 408 of a body that stops arriving: refused from the header alone.
    status, body, closed = await connection.answer(within=IDLE + 10)
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert str(f"{DEFAULT_LIMIT:,}") in body["error"]["message"]
    assert closed, "the rest of the body would be read for nothing"


async def test_chunked_body_past_the_limit_is_413(server, connection) -> None:
    chunk = b"x" * 65536
    await connection.send(
        request_head(
            server, "/v1/calls/batch", "application/json", **{"Transfer-Encoding": "chunked"}
        )
    )
    sent = 0
    try:
        while sent <= DEFAULT_LIMIT:
            await connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except ConnectionError:
        pass  # the server may answer and close while we are still sending
    status, body, closed = await connection.answer(within=5)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert closed


async def test_stalled_csv_upload_is_408_and_stores_nothing(server, connection) -> None:
    """A streamed CSV has no total limit, so announcing a gigabyte is allowed; a body that
    stops arriving is not."""
    path = f"/v1/campaigns/{server.campaign_id}/contacts"
    await connection.send(
        request_head(server, path, "text/csv", **{"Content-Length": "1000000000"})
    )
    await connection.send(b"phone_number\n+15559990001\n+15559990002\n")
    started = time.monotonic()
    status, body, closed = await connection.answer(within=IDLE + 5)
    waited = time.monotonic() - started
    assert status == 408, body
    assert body["error"]["code"] == "request_timeout"
    assert "stopped arriving" in body["error"]["message"]
    assert closed
    assert waited >= IDLE * 0.9  # and, by answer's `within`, long before a gigabyte came
    assert await contacts_of(server) == []


async def test_trickled_json_body_is_408_at_its_deadline(server, connection) -> None:
    """One byte every 0.2 s is never idle for long, but a bounded body must be complete
    within its deadline."""
    await connection.send(
        request_head(server, "/v1/calls/batch", "application/json", **{"Content-Length": "1000"})
    )
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(1000):
            await connection.send(b" ")
            await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    try:
        status, body, closed = await connection.answer(within=DEADLINE + 5)
    finally:
        trickling.cancel()
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert f"within {DEADLINE:g} s" in body["error"]["message"]
    assert closed
    assert DEADLINE * 0.9 <= time.monotonic() - started < DEADLINE + 2


# --- in process: what fits, and which bodies are exempt -------------------------------------


def metadata_of(size: int) -> dict[str, str]:
    return {"note": "x" * (size - len('{"note":""}'))}


async def test_a_500_recipient_batch_with_4_kb_metadata_each_fits(client, tenant, agent) -> None:
    """The documented sizing: 500 recipients with ~4 KB of metadata each fit in the limit."""
    recipients = [{"to": f"+1555888{i:04d}", "metadata": metadata_of(4000)} for i in range(500)]
    body = {"agent_id": agent["id"], "recipients": recipients}
    assert len(json.dumps(body)) < DEFAULT_LIMIT
    response = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text

    for r in recipients:
        r["metadata"] = metadata_of(4300)
    assert len(json.dumps(body)) > DEFAULT_LIMIT
    response = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert response.status_code == 413
    assert error_code(response) == "request_too_large"
    assert len((await client.get("/v1/calls", headers=tenant.headers)).json()["data"]) == 1


@pytest.fixture
async def small_limit_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a 4 KiB body limit, over the test database."""
    application = create_app(Settings(database_url=database_url, max_body_bytes=4096))
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://outdial.test") as c:
            yield c


async def test_only_streamed_csv_bodies_are_exempt(
    client, small_limit_client, tenant, agent
) -> None:
    http = small_limit_client
    created = await http.post(
        "/v1/campaigns",
        json={"agent_id": agent["id"], "name": "c", "call_from_number": "+15559990000"},
        headers=tenant.headers,
    )
    path = f"/v1/campaigns/{created.json()['campaign_id']}/contacts"
    csv = "phone_number,name\n" + "".join(f"+1555777{i:04d},Person {i}\n" for i in range(400))
    assert len(csv) > 4096
    uploaded = await http.post(
        path, content=csv.encode(), headers={**tenant.headers, "Content-Type": "text/csv"}
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["inserted_count"] == 400

    contacts = {"contacts": [{"phone_number": f"+1555666{i:04d}"} for i in range(200)]}
    as_json = await http.post(path, json=contacts, headers=tenant.headers)
    assert as_json.status_code == 413 and error_code(as_json) == "request_too_large"
    # text/csv elsewhere is an ordinary body
    elsewhere = await http.post(
        "/v1/dnc/check",
        content=csv.encode(),
        headers={**tenant.headers, "Content-Type": "text/csv"},
    )
    assert elsewhere.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            yield json.dumps({"pad": "x" * 100, "i": i}).encode()

    chunked = await http.post("/v1/agents", content=chunks(), headers=tenant.headers)
    assert chunked.status_code == 413 and error_code(chunked) == "request_too_large"
    listed = await http.get(path, params={"limit": 1000}, headers=tenant.headers)
    assert len(listed.json()["data"]) == 400
    assert len((await http.get("/v1/agents", headers=tenant.headers)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("path", "field", "limit"),
    [
        ("/v1/calls/batch", "to", 500),
        ("/v1/calls/batch", "recipients", 500),
        ("/v1/calls", "participants", 500),
        ("/v1/dnc/batch", "phone_numbers", 1000),
        ("/v1/dnc/check", "phone_numbers", 500),
        ("/v1/campaigns/{campaign_id}/contacts", "contacts", 10_000),
    ],
)
async def test_a_list_past_its_limit_is_refused_before_its_items_are_read(
    client, tenant, agent, path: str, field: str, limit: int
) -> None:
    """100,000 entries fit in a body; refused by their count alone, not validated one by
    one first (which took seconds, and listed an error per entry)."""
    created = await client.post(
        "/v1/campaigns",
        json={"agent_id": agent["id"], "name": "c", "call_from_number": "+15559990000"},
        headers=tenant.headers,
    )
    url = path.format(campaign_id=created.json()["campaign_id"])
    body = {"agent_id": agent["id"], field: ["x"] * 100_000}
    if path != "/v1/calls/batch":
        del body["agent_id"]
    response = await client.post(url, json=body, headers=tenant.headers)
    assert response.status_code == 400, response.text
    details = response.json()["error"]["details"]
    assert [(d["loc"], d["type"]) for d in details] == [([field], "too_long")]
    assert f"at most {limit} items" in details[0]["message"]
