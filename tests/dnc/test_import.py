"""POST /v1/dnc/import: a streamed CSV of any size onto the do-not-call list, committed a chunk
at a time; a retry with its Idempotency-Key resumes it or replays its answer."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from outdial.dnc import imports
from outdial.dnc.models import DncEntry, DncImport
from tests.conftest import TenantHandle, create_agent, error_code

CSV = {"Content-Type": "text/csv"}


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def post_import(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    data: bytes | AsyncIterator[bytes],
    **headers: str,
) -> httpx.Response:
    content = chunks(data) if isinstance(data, bytes) else data
    return await client.post(
        "/v1/dnc/import", content=content, headers={**tenant.headers, **CSV, **headers}
    )


async def listed(app, tenant: TenantHandle) -> dict[str, DncEntry]:
    async with app.state.sessionmaker() as session:
        entries = await session.scalars(select(DncEntry).where(DncEntry.tenant_id == tenant.id))
        return {e.phone_number: e for e in entries}


async def count_listed(app, tenant: TenantHandle) -> int:
    async with app.state.sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(DncEntry).where(DncEntry.tenant_id == tenant.id)
        )


def numbers_csv(count: int, *, start: int = 0, header: bool = True) -> bytes:
    """A header and `count` numbers: +15550000000 onwards, or from +1555 and `start`."""
    rows = "".join(f"+1555{i:07d}\n" for i in range(start, start + count))
    return (("phone_number\n" if header else "") + rows).encode()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Commit every 1,000 rows, so that a few thousand rows make several chunks."""
    monkeypatch.setattr(imports, "CHUNK_ROWS", 1000)
    return 1000


# --- what is imported ----------------------------------------------------------------------


async def test_numbers_duplicates_and_invalid_rows_are_counted(app, client, tenant) -> None:
    await client.post("/v1/dnc", json={"phone_number": "+15557770003"}, headers=tenant.headers)
    data = (
        "\ufeffphone_number\r\n"
        "+15557770001\r\n"
        "15557770002\r\n"  # the + may be left out
        "+15557770003\r\n"  # already on the list
        "\r\n"  # a blank line is no row
        "+15557770001\r\n"  # twice in the file
        "call me\r\n"
        "+1555\r\n"
        '"+15557770004"\r\n'
        "+15557770005,extra\r\n"
        " +15557770006 \r\n"  # spaces around a number are dropped
        "+390612345678"  # no line end at the end; an Italian leading zero kept
    ).encode()
    response = await post_import(client, tenant, data)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "inserted_count": 5,
        "duplicate_count": 2,
        "invalid_count": 3,
        "invalid": [
            {
                "row": 7,
                "reason": "phone_number 'call me' is not an E.164 number "
                "(expected + and 2 to 15 digits)",
            },
            {"row": 8, "reason": "phone_number '+1555' is not a possible number for its country"},
            {"row": 10, "reason": "expected 1 columns, found 2"},
        ],
    }
    entries = await listed(app, tenant)
    assert set(entries) == {
        "+15557770001",
        "+15557770002",
        "+15557770003",
        "+15557770004",
        "+15557770006",
        "+390612345678",
    }
    assert entries["+15557770001"].source == "import"
    assert entries["+15557770003"].source == "api"  # an entry already there is left as it is


async def test_a_reason_column_is_kept_and_other_columns_ignored(app, client, tenant) -> None:
    data = (
        "name,phone_number,reason\n"
        "Ann,+15557770001,asked us to stop\n"
        "Bob,+15557770002,\n"
        f"Cal,+15557770003,{'x' * 501}\n"
    ).encode()
    response = await post_import(client, tenant, data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["inserted_count"], body["invalid_count"]) == (2, 1)
    assert body["invalid"] == [{"row": 4, "reason": "reason is longer than 500 characters"}]
    entries = await listed(app, tenant)
    assert entries["+15557770001"].reason == "asked us to stop"
    assert entries["+15557770002"].reason is None


async def test_listed_numbers_are_never_dialed(client, tenant, agent) -> None:
    await post_import(client, tenant, numbers_csv(3, start=9_990_001))
    blocked = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990002"]},
        headers=tenant.headers,
    )
    assert blocked.status_code == 409, blocked.text


async def test_many_chunks_are_imported_and_counted(app, client, tenant, small_chunks) -> None:
    first = await post_import(client, tenant, numbers_csv(3_500))
    assert first.json() == {
        "inserted_count": 3_500,
        "duplicate_count": 0,
        "invalid_count": 0,
        "invalid": [],
    }
    # The same file and more, again: the first 3,500 are duplicates now.
    again = await post_import(client, tenant, numbers_csv(5_000))
    assert (again.json()["inserted_count"], again.json()["duplicate_count"]) == (1_500, 3_500)
    assert await count_listed(app, tenant) == 5_000


async def test_another_tenants_list_is_untouched(app, client, tenant, make_tenant) -> None:
    other = await make_tenant()
    await client.post("/v1/dnc", json={"phone_number": "+15557770001"}, headers=other.headers)
    response = await post_import(client, tenant, numbers_csv(10, start=7_770_000))
    assert response.json()["inserted_count"] == 10  # the other tenant's entry is no duplicate
    assert set(await listed(app, other)) == {"+15557770001"}
    assert (await listed(app, other))["+15557770001"].source == "api"


# --- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "", "text/csv; charset=latin-1", "multipart/form-data"],
)
async def test_a_body_that_is_not_csv_is_415(app, client, tenant, content_type) -> None:
    response = await client.post(
        "/v1/dnc/import",
        content=numbers_csv(2),
        headers={**tenant.headers, "Content-Type": content_type},
    )
    assert response.status_code == 415, response.text
    assert error_code(response) == "unsupported_media_type"
    assert await count_listed(app, tenant) == 0


async def test_csv_with_a_utf8_charset_is_taken(client, tenant) -> None:
    response = await post_import(
        client, tenant, numbers_csv(2), **{"Content-Type": 'text/csv; charset="UTF-8"'}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("data", "code", "kept"),
    [
        (b"", "invalid_csv", 0),
        (b"\n\n", "invalid_csv_header", 0),
        (b"number\n+15557770001\n", "invalid_csv_header", 0),
        (b"phone_number,phone_number\n+15557770001,+15557770002\n", "invalid_csv_header", 0),
        (b"phone_number\n+15557770001\n\xff\n", "invalid_csv", 1),
        (b"phone_number\n+15557770001\x00\n", "invalid_csv", 0),
        (b'phone_number\n+15557770001\n"+15557770002\n', "invalid_csv", 1),
    ],
    ids=["empty", "blank-header", "no-phone-column", "twice", "not-utf8", "nul", "unclosed"],
)
async def test_a_bad_file_is_400(app, client, tenant, data, code, kept) -> None:
    """Refused whole if the header is wrong; a fault further on keeps the rows before it."""
    response = await post_import(client, tenant, data)
    assert response.status_code == 400, response.text
    assert error_code(response) == code
    assert await count_listed(app, tenant) == kept


async def test_a_publishable_key_is_403(app, client, tenant) -> None:
    agent = await create_agent(client, tenant)
    key = await client.post(
        "/v1/keys", json={"type": "publishable", "agent_id": agent["id"]}, headers=tenant.headers
    )
    headers = {"Authorization": f"Bearer {key.json()['key']}", **CSV}
    response = await client.post("/v1/dnc/import", content=numbers_csv(2), headers=headers)
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"
    assert await count_listed(app, tenant) == 0


async def test_an_unknown_key_is_401(client) -> None:
    response = await client.post(
        "/v1/dnc/import",
        content=numbers_csv(2),
        headers={"Authorization": "Bearer sb_secret_nope", **CSV},
    )
    assert response.status_code == 401


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_a_bad_idempotency_key_is_400(app, client, tenant, key) -> None:
    response = await post_import(client, tenant, numbers_csv(2), **{"Idempotency-Key": key})
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert await count_listed(app, tenant) == 0


async def test_a_fault_keeps_the_rows_before_it_and_says_so(
    app, client, tenant, small_chunks
) -> None:
    """Chunks are committed as they come: a bad record after 2,500 rows leaves those rows
    imported, and the 400 counts them."""
    data = numbers_csv(2_500) + b"+15557770001,\xff\n" + numbers_csv(10, header=False)
    response = await post_import(client, tenant, data)
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_csv"
    error = response.json()["error"]
    assert "Every row before it was imported: 2,500 numbers added" in error["message"]
    assert error["details"]["inserted_count"] == 2_500
    assert error["details"]["duplicate_count"] == 0
    assert await count_listed(app, tenant) == 2_500


# --- Idempotency-Key -----------------------------------------------------------------------


async def test_a_retry_replays_the_answer(app, client, tenant, small_chunks) -> None:
    data = numbers_csv(2_500) + b"bad\n"
    key = {"Idempotency-Key": "registry-2026-11"}
    first = await post_import(client, tenant, data, **key)
    assert first.status_code == 200, first.text
    again = await post_import(client, tenant, chunks(data, 777), **key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["inserted_count"] == 2_500
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    other = await post_import(client, tenant, numbers_csv(2_501), **key)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert await count_listed(app, tenant) == 2_500


class Interrupted(Exception):
    pass


async def cut_after(data: bytes, size: int) -> AsyncIterator[bytes]:
    """The body's first `size` bytes, then the client's connection fails."""
    async for piece in chunks(data[:size], 1000):
        yield piece
    raise Interrupted


async def test_a_retry_resumes_an_interrupted_import(app, client, tenant, small_chunks) -> None:
    """The first attempt dies after committing some chunks; the retry skips what they cover,
    imports the rest, and answers for the whole file, as one uninterrupted import would."""
    data = numbers_csv(10_000) + b"nope\n" + numbers_csv(1_000, header=False)  # repeated
    key = {"Idempotency-Key": "registry-resume"}
    with pytest.raises(Interrupted):
        await post_import(client, tenant, cut_after(data, len(data) * 2 // 3), **key)
    committed = await count_listed(app, tenant)
    assert 1_000 <= committed < 10_000
    async with app.state.sessionmaker() as session:
        progress = await session.get(DncImport, (tenant.id, "registry-resume"))
        assert progress is not None
        assert progress.status == "importing"
        assert progress.inserted_count == committed

    retry = await post_import(client, tenant, chunks(data, 333), **key)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {
        "inserted_count": 10_000,
        "duplicate_count": 1_000,
        "invalid_count": 1,
        "invalid": [
            {
                "row": 10_002,
                "reason": "phone_number 'nope' is not an E.164 number "
                "(expected + and 2 to 15 digits)",
            }
        ],
    }
    assert await count_listed(app, tenant) == 10_000
    replay = await post_import(client, tenant, data, **key)
    assert replay.json() == retry.json()


async def test_a_retry_with_a_different_prefix_is_refused(
    app, client, tenant, small_chunks
) -> None:
    key = {"Idempotency-Key": "registry-other"}
    data = numbers_csv(10_000)
    with pytest.raises(Interrupted):
        await post_import(client, tenant, cut_after(data, len(data) // 2), **key)
    committed = await count_listed(app, tenant)
    other = await post_import(client, tenant, numbers_csv(10_000, start=1), **key)
    assert other.status_code == 422, other.text
    assert error_code(other) == "idempotency_key_reused"
    assert await count_listed(app, tenant) == committed


async def test_a_retry_of_a_faulty_file_meets_the_fault_again(
    app, client, tenant, small_chunks
) -> None:
    """A retry resumes at the fault and meets it again: the same 400 with the same counts,
    nothing imported twice. The file corrected from the faulty row on carries the import on
    (what was committed is the same), and its answer covers the whole file."""
    key = {"Idempotency-Key": "registry-faulty"}
    data = numbers_csv(2_500) + b"+15557770001\x00\n" + numbers_csv(5, header=False)
    first = await post_import(client, tenant, data, **key)
    again = await post_import(client, tenant, data, **key)
    assert first.status_code == again.status_code == 400, first.text
    assert again.json() == first.json()
    assert first.json()["error"]["details"]["inserted_count"] == 2_500
    assert first.json()["error"]["details"]["row"] == 2_502
    assert await count_listed(app, tenant) == 2_500

    fixed = data.replace(b"+15557770001\x00\n", b"+15557770001\n")
    done = await post_import(client, tenant, fixed, **key)
    assert done.status_code == 200, done.text
    assert done.json()["inserted_count"] == 2_501
    assert done.json()["duplicate_count"] == 5
    assert await count_listed(app, tenant) == 2_501


async def test_a_retry_takes_over_a_stalled_import(app, client, tenant, small_chunks) -> None:
    """A retry while the first request is still reading (its client stalled): the retry
    finishes the import; the first stops at its next chunk with a 409, having added nothing
    the retry counts again."""
    data = numbers_csv(10_000)
    key = {"Idempotency-Key": "registry-stalled"}
    stall = asyncio.Event()
    release = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        half = len(data) // 2
        async for piece in chunks(data[:half], 1000):
            yield piece
        stall.set()
        await release.wait()
        async for piece in chunks(data[half:], 1000):
            yield piece

    first = asyncio.create_task(post_import(client, tenant, stalling(), **key))
    await asyncio.wait_for(stall.wait(), 30)
    await asyncio.sleep(0.2)  # its chunks so far are committed
    retry = await post_import(client, tenant, data, **key)
    release.set()
    superseded = await first
    assert retry.status_code == 200, retry.text
    assert retry.json()["inserted_count"] == 10_000
    assert superseded.status_code == 409, superseded.text
    assert error_code(superseded) == "import_superseded"
    assert await count_listed(app, tenant) == 10_000
    replay = await post_import(client, tenant, data, **key)
    assert replay.json() == retry.json()


async def test_without_a_key_a_second_import_counts_duplicates(client, tenant) -> None:
    first = await post_import(client, tenant, numbers_csv(10))
    second = await post_import(client, tenant, numbers_csv(10))
    assert first.json()["inserted_count"] == 10
    assert (second.json()["inserted_count"], second.json()["duplicate_count"]) == (0, 10)
