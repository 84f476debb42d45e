"""Contacts as a streamed text/csv body: any size, read as it arrives, chunk boundaries
anywhere (inside a quoted field, inside a UTF-8 character), on both backends."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from outdial.csvstream import MAX_RECORD_BYTES
from tests.campaigns.conftest import campaign, create_campaign
from tests.conftest import error_code

CSV = {"Content-Type": "text/csv"}


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def upload(client, tenant, campaign_id: str, data: bytes, size: int = 4096):
    return await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        content=chunks(data, size),
        headers={**tenant.headers, **CSV},
    )


async def all_contacts(client, tenant, campaign_id: str) -> list[dict]:
    found, cursor = [], None
    while True:
        params = {"limit": 1000, **({"after": cursor} if cursor else {})}
        page = (
            await client.get(
                f"/v1/campaigns/{campaign_id}/contacts", params=params, headers=tenant.headers
            )
        ).json()
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_a_20000_row_csv_is_streamed_in(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    rows = ["phone_number,name,plan"] + [f"1555{i:07d},Person {i},Gold" for i in range(20_000)]
    response = await upload(client, tenant, campaign_id, ("\n".join(rows) + "\n").encode(), 8191)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "status": "success",
        "inserted_count": 20_000,
        "duplicate_count": 0,
        "invalid_count": 0,
        "invalid": [],
    }
    contacts = await all_contacts(client, tenant, campaign_id)
    assert len(contacts) == 20_000
    assert contacts[0]["phone_number"] == "+15550000000"
    assert contacts[0]["variables"] == {"name": "Person 0", "plan": "Gold"}
    assert contacts[-1]["phone_number"] == "+15550019999"
    assert (await campaign(client, tenant, campaign_id))["contacts"]["total"] == 20_000


async def test_rows_quotes_zones_duplicates_and_invalid_lines(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = (
        "\ufeffname , phone_number,timezone,note\r\n"
        '"Zoë, the first",+15557770001,Europe/Paris,"said ""hi""\nthen left"\r\n'
        "Bob,15557770002,,\r\n"
        "\r\n"
        "Bad,12,,\r\n"
        "Cal,+15557770003,Moon/Base,\r\n"
        "Dup,+15557770001,,\r\n"
        "Short,+15557770004\r\n"
        "Eve,15557770005,America/New_York,last row without a newline"
    ).encode()
    response = await upload(client, tenant, campaign_id, data, size=7)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["inserted_count"] == 3
    assert result["duplicate_count"] == 1
    assert result["invalid_count"] == 3
    assert [(row["row"]) for row in result["invalid"]] == [5, 6, 8]
    reasons = [row["reason"] for row in result["invalid"]]
    assert "phone_number '12'" in reasons[0]
    assert "Moon/Base" in reasons[1]
    assert "expected 4 columns, found 2" in reasons[2]
    contacts = {c["phone_number"]: c for c in await all_contacts(client, tenant, campaign_id)}
    assert set(contacts) == {"+15557770001", "+15557770002", "+15557770005"}
    first = contacts["+15557770001"]
    assert first["variables"] == {"name": "Zoë, the first", "note": 'said "hi"\nthen left'}
    assert first["timezone"] == "Europe/Paris"
    assert contacts["+15557770002"]["timezone"] is None
    assert contacts["+15557770005"]["timezone"] == "America/New_York"

    # The same file again: every number is a duplicate now.
    again = await upload(client, tenant, campaign_id, data, size=4096)
    assert (again.json()["inserted_count"], again.json()["duplicate_count"]) == (0, 4)


async def test_invalid_rows_listed_are_capped(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = "phone_number\n" + "\n".join(["nope"] * 250 + ["+15557770001"])
    result = (await upload(client, tenant, campaign_id, data.encode())).json()
    assert result["inserted_count"] == 1
    assert result["invalid_count"] == 250
    assert len(result["invalid"]) == 100
    assert result["invalid"][0]["row"] == 2


async def test_a_bad_header_or_body_refuses_the_upload(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    cases = [
        (b"number,name\n+15557770001,A\n", "invalid_csv_header"),
        (b"phone_number,phone_number\n+15557770001,+15557770002\n", "invalid_csv_header"),
        (b"", "invalid_csv"),
        (b"phone_number\n\xff\xfe\n", "invalid_csv"),
        (b'phone_number,note\n+15557770001,"never closed\n' + b"x" * 1_100_000, "invalid_csv"),
    ]
    for data, code in cases:
        response = await upload(client, tenant, campaign_id, data)
        assert response.status_code == 400, response.text
        assert error_code(response) == code
    assert await all_contacts(client, tenant, campaign_id) == []


async def test_a_fault_after_many_good_rows_imports_nothing(client, tenant, agent) -> None:
    """The upload is one transaction: rows already inserted (two 10,000-row chunks here) are
    rolled back when a later record is refused."""
    campaign_id = await create_campaign(client, tenant, agent["id"])
    good = "phone_number,note\n" + "".join(f"1555{i:07d},n\n" for i in range(25_000))
    faults = [
        (good + '+15557770001,"' + "x" * MAX_RECORD_BYTES + '"\n', "longer than 65,536 bytes"),
        (good + '+15557770001,"never closed\n', "never closed"),
        (good + "+15557770001,a\x00b\n", "column 'note', holds a NUL character"),
    ]
    for data, message in faults:
        response = await upload(client, tenant, campaign_id, data.encode(), 65_536)
        assert response.status_code == 400, response.text
        assert error_code(response) == "invalid_csv"
        assert message in response.json()["error"]["message"]
        assert response.json()["error"]["details"]["row"] == 25_002
    assert await all_contacts(client, tenant, campaign_id) == []


async def test_a_record_of_60_kib_is_accepted(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    note = "line\n" * 12_000
    data = f'phone_number,note\n+15557770001,"{note}"\n+15557770002,short\n'.encode()
    response = await upload(client, tenant, campaign_id, data, 1000)
    assert response.status_code == 201, response.text
    assert response.json()["inserted_count"] == 2
    contacts = await all_contacts(client, tenant, campaign_id)
    assert contacts[0]["variables"] == {"note": note}


async def test_an_idempotency_key_replays_a_csv_upload(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    data = b"phone_number,name\n+15557770001,A\n+15557770002,B\n"
    headers = {**tenant.headers, **CSV, "Idempotency-Key": "upload-1"}
    path = f"/v1/campaigns/{campaign_id}/contacts"
    first = await client.post(path, content=chunks(data, 5), headers=headers)
    again = await client.post(path, content=chunks(data, 11), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["inserted_count"] == 2
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = await client.post(path, content=data + b"+15557770003,C\n", headers=headers)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert len(await all_contacts(client, tenant, campaign_id)) == 2


async def test_an_overlong_idempotency_key_refuses_a_csv_upload_whole(
    client, tenant, agent
) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    headers = {**tenant.headers, **CSV, "Idempotency-Key": "u" * 256}
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        content=chunks(b"phone_number\n+15557770001\n", 7),
        headers=headers,
    )
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert await all_contacts(client, tenant, campaign_id) == []


# --- a hostile upload never stalls the server ----------------------------------------------

HOSTILE_BYTES = 10 * 1024 * 1024
PROBE_LIMIT_SECONDS = 0.1


def hostile_csv() -> Iterator[bytes]:
    """10 MB of records that are one quoted field of 10,000 newlines each (every one invalid:
    the header names two columns), ending in a quote that is never closed: each newline made
    the old reader rescan its text for quotes, so its cost grew with the square of the size."""
    yield b"phone_number,x\n"
    record = b'"' + b"\n" * 10_000 + b'"\n'
    sent = 0
    while sent < HOSTILE_BYTES - 1_000_000:
        yield record
        sent += len(record)
    yield b'"' + b"\n" * 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """The CPU time the server's process has used so far (user and system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def api_server(database_url: str) -> Iterator[Server]:
    """`outdial api` in a process of its own: its event loop is the one under test."""
    port = free_port()
    env = {**os.environ, "OUTDIAL_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "outdial.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


@dataclass
class Probe:
    seconds: float  # from request to answer
    server_cpu_seconds: float  # of work the server did meanwhile (its own, and anything else)


async def probes(
    server: Server, prober: httpx.AsyncClient, *, until: Callable[[], bool]
) -> list[Probe]:
    """`GET /v1/auth/me` every 20 ms until `until()`; a probe that gets no answer within 2 s
    ends the list, as an infinitely slow one."""
    found: list[Probe] = []
    while not until():
        started, cpu = time.perf_counter(), server.cpu_seconds()
        try:
            me = await prober.get("/v1/auth/me", timeout=2)
        except httpx.TimeoutException:
            return [*found, Probe(float("inf"), float("inf"))]
        assert me.status_code == 200
        found.append(Probe(time.perf_counter() - started, server.cpu_seconds() - cpu))
        await asyncio.sleep(0.02)
    return found


async def test_a_hostile_upload_leaves_the_server_responsive(
    database_url, client, tenant, agent
) -> None:
    """Issue 10, defect 1: `/v1/auth/me` answers within 100 ms while a hostile 10 MB CSV is
    uploaded to a real server (its own process, so a blocked event loop shows as a slow or
    missing answer here); the upload ends in a 400 and imports nothing.

    The 100 ms are the server's CPU time between each probe's request and its answer: the
    work its event loop did before answering (the probe's own, and whatever the upload did in
    between). A machine busy with other work stretches the wall-clock time of each probe, not
    that. The old reader held the loop for seconds (no answer within 2 s).

    PostgreSQL only: on SQLite every transaction begins IMMEDIATE, so any request waits for
    the upload's transaction whatever its event loop does."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises every transaction behind the upload's")
    campaign_id = await create_campaign(client, tenant, agent["id"])
    with api_server(database_url) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, headers=tenant.headers, timeout=120) as up,
            httpx.AsyncClient(base_url=server.url, headers=tenant.headers) as prober,
        ):
            assert (await prober.get("/v1/auth/me")).status_code == 200  # connected, warm

            async def body() -> AsyncIterator[bytes]:
                for piece in hostile_csv():
                    for start in range(0, len(piece), 65_536):
                        yield piece[start : start + 65_536]

            path = f"/v1/campaigns/{campaign_id}/contacts"
            upload = asyncio.create_task(up.post(path, content=body(), headers=CSV))
            try:
                during = await probes(server, prober, until=upload.done)
            finally:
                if not upload.done():
                    upload.cancel()
                response = (await asyncio.gather(upload, return_exceptions=True))[0]
    slowest = max(during, key=lambda p: p.server_cpu_seconds)
    assert slowest.server_cpu_seconds < PROBE_LIMIT_SECONDS, (slowest, len(during))
    assert len(during) >= 10, during  # the probes spanned the upload
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_csv"
    assert await all_contacts(client, tenant, campaign_id) == []
