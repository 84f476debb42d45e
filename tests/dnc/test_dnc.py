"""The do-not-call list: upsert, batch, check, list, delete."""

from typing import Any

import httpx
import pytest

from tests.conftest import TenantHandle, error_code

DNC_FIELDS = {"phone_number", "reason", "source", "created_at"}


async def listed(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/dnc", params={"limit": 1000}, headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["next_cursor"] is None
    return {e["phone_number"]: e for e in response.json()["data"]}


async def check(client: httpx.AsyncClient, tenant: TenantHandle, numbers: list[str]) -> Any:
    response = await client.post(
        "/v1/dnc/check", json={"phone_numbers": numbers}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- POST /v1/dnc --------------------------------------------------------------------------


async def test_add_is_an_upsert_safe_to_retry(client, tenant) -> None:
    body = {"phone_number": "+15559990001", "reason": "asked us to stop"}
    first = await client.post("/v1/dnc", json=body, headers=tenant.headers)
    assert first.status_code == 201, first.text
    entry = first.json()
    assert set(entry) == DNC_FIELDS
    assert entry["phone_number"] == "+15559990001"
    assert entry["reason"] == "asked us to stop"
    assert entry["source"] == "api"

    for _ in range(2):
        again = await client.post("/v1/dnc", json=body, headers=tenant.headers)
        assert again.status_code == 200
        assert again.json() == entry
    assert list(await listed(client, tenant)) == ["+15559990001"]


async def test_upsert_updates_the_reason(client, tenant) -> None:
    await client.post("/v1/dnc", json={"phone_number": "+15559990001"}, headers=tenant.headers)
    updated = await client.post(
        "/v1/dnc",
        json={"phone_number": "+15559990001", "reason": "litigator"},
        headers=tenant.headers,
    )
    assert updated.status_code == 200
    assert updated.json()["reason"] == "litigator"
    # a retry without a reason does not erase it
    bare = await client.post(
        "/v1/dnc", json={"phone_number": "+15559990001"}, headers=tenant.headers
    )
    assert bare.status_code == 200
    assert bare.json()["reason"] == "litigator"
    assert bare.json()["created_at"] == updated.json()["created_at"]
    assert (await listed(client, tenant))["+15559990001"]["reason"] == "litigator"


async def test_add_with_idempotency_key(client, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "dnc-1"}
    body = {"phone_number": "+15559990001", "reason": "first"}
    first = await client.post("/v1/dnc", json=body, headers=headers)
    again = await client.post("/v1/dnc", json=body, headers=headers)
    assert first.status_code == again.status_code == 201  # the first answer, replayed
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    reused = await client.post("/v1/dnc", json={"phone_number": "+15559990002"}, headers=headers)
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    assert list(await listed(client, tenant)) == ["+15559990001"]


async def test_batch_with_idempotency_key(client, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "dnc-batch-1"}
    body = {"phone_numbers": ["+15559990001", "+15559990002"]}
    first = await client.post("/v1/dnc/batch", json=body, headers=headers)
    again = await client.post("/v1/dnc/batch", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    # a retry answers what the first request did, not "already listed"
    assert first.json() == again.json() == {"added": 2, "already_listed": 0}
    reused = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": ["+15559990003"]}, headers=headers
    )
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    assert set(await listed(client, tenant)) == {"+15559990001", "+15559990002"}


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({}, [["phone_number"]]),
        ({"phone_number": "5559990001"}, [["phone_number"]]),
        ({"phone_number": "+1555"}, [["phone_number"]]),
        (
            {"phone_number": "bad", "reason": "x" * 501, "note": 1},
            [["phone_number"], ["reason"], ["note"]],
        ),
    ],
    ids=["missing", "no-plus", "too-short", "everything-wrong"],
)
async def test_add_validation(client, tenant, body, locs) -> None:
    response = await client.post("/v1/dnc", json=body, headers=tenant.headers)
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert sorted(d["loc"] for d in response.json()["error"]["details"]) == sorted(locs)
    assert await listed(client, tenant) == {}


# --- POST /v1/dnc/batch --------------------------------------------------------------------


async def test_batch_adds_and_counts(client, tenant) -> None:
    await client.post("/v1/dnc", json={"phone_number": "+15559990001"}, headers=tenant.headers)
    numbers = ["+15559990001", "+15559990002", "+15559990003", "+15559990002"]
    response = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers, "reason": "list"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"added": 2, "already_listed": 1}
    entries = await listed(client, tenant)
    assert set(entries) == {"+15559990001", "+15559990002", "+15559990003"}
    assert entries["+15559990002"]["reason"] == "list"

    retried = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers, "reason": "list"}, headers=tenant.headers
    )
    assert retried.status_code == 200
    assert retried.json() == {"added": 0, "already_listed": 3}
    assert len(await listed(client, tenant)) == 3


async def test_batch_of_1000_is_accepted(client, tenant) -> None:
    numbers = [f"+1555700{i:04d}" for i in range(1000)]
    response = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"added": 1000, "already_listed": 0}
    assert len(await listed(client, tenant)) == 1000


async def test_batch_over_1000_is_400(client, tenant) -> None:
    numbers = [f"+1555700{i:04d}" for i in range(1001)]
    response = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers}, headers=tenant.headers
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert [d["loc"] for d in response.json()["error"]["details"]] == [["phone_numbers"]]
    assert await listed(client, tenant) == {}


async def test_batch_lists_every_invalid_number_with_its_index(client, tenant) -> None:
    numbers = ["+15559990001", "15559990002", "+15559990003", "+1555", "call me"]
    response = await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers}, headers=tenant.headers
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    details = response.json()["error"]["details"]
    assert [d["loc"] for d in details] == [
        ["phone_numbers", 1],
        ["phone_numbers", 3],
        ["phone_numbers", 4],
    ]
    assert "15559990002" in details[0]["message"]
    assert await listed(client, tenant) == {}  # nothing added, not even the valid ones


@pytest.mark.parametrize("body", [{}, {"phone_numbers": []}, {"phone_numbers": "+15559990001"}])
async def test_batch_needs_a_list(client, tenant, body) -> None:
    response = await client.post("/v1/dnc/batch", json=body, headers=tenant.headers)
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


# --- POST /v1/dnc/check --------------------------------------------------------------------


async def test_check_answers_per_number_in_order(client, tenant, make_tenant) -> None:
    await client.post(
        "/v1/dnc/batch",
        json={"phone_numbers": ["+15559990002", "+15559990004"]},
        headers=tenant.headers,
    )
    numbers = ["+15559990004", "+15559990001", "+15559990002", "+15559990004"]
    assert await check(client, tenant, numbers) == {
        "results": [
            {"phone_number": "+15559990004", "blocked": True},
            {"phone_number": "+15559990001", "blocked": False},
            {"phone_number": "+15559990002", "blocked": True},
            {"phone_number": "+15559990004", "blocked": True},
        ]
    }
    other = await make_tenant()  # lists are per tenant
    assert [r["blocked"] for r in (await check(client, other, numbers))["results"]] == [False] * 4


async def test_check_limits(client, tenant) -> None:
    ok = [f"+1555700{i:04d}" for i in range(500)]
    assert len((await check(client, tenant, ok))["results"]) == 500
    over = await client.post(
        "/v1/dnc/check", json={"phone_numbers": [*ok, "+15557010000"]}, headers=tenant.headers
    )
    assert over.status_code == 400
    assert error_code(over) == "validation_error"
    empty = await client.post("/v1/dnc/check", json={"phone_numbers": []}, headers=tenant.headers)
    assert empty.status_code == 400
    bad = await client.post(
        "/v1/dnc/check",
        json={"phone_numbers": ["+15559990001", "x", "+1"]},
        headers=tenant.headers,
    )
    assert bad.status_code == 400
    assert error_code(bad) == "validation_error"
    locs = [d["loc"] for d in bad.json()["error"]["details"]]
    assert locs == [["phone_numbers", 1], ["phone_numbers", 2]]


# --- GET /v1/dnc ---------------------------------------------------------------------------


async def test_list_pages(client, tenant) -> None:
    numbers = [f"+1555999{i:04d}" for i in range(5)]
    await client.post(
        "/v1/dnc/batch", json={"phone_numbers": numbers[::-1]}, headers=tenant.headers
    )
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["after"] = after
        page = (await client.get("/v1/dnc", params=params, headers=tenant.headers)).json()
        assert set(page) == {"data", "next_cursor"}
        assert all(set(e) == DNC_FIELDS for e in page["data"])
        seen.extend(e["phone_number"] for e in page["data"])
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == numbers
    too_many = await client.get("/v1/dnc", params={"limit": 1001}, headers=tenant.headers)
    assert too_many.status_code == 400
    assert error_code(too_many) == "validation_error"


# --- DELETE /v1/dnc/{e164} -----------------------------------------------------------------


async def test_delete_then_404(client, tenant) -> None:
    await client.post(
        "/v1/dnc/batch",
        json={"phone_numbers": ["+15559990001", "+15559990002"]},
        headers=tenant.headers,
    )
    response = await client.delete("/v1/dnc/+15559990001", headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert list(await listed(client, tenant)) == ["+15559990002"]
    assert (await check(client, tenant, ["+15559990001"]))["results"][0]["blocked"] is False

    again = await client.delete("/v1/dnc/+15559990001", headers=tenant.headers)
    assert again.status_code == 404
    assert error_code(again) == "dnc_not_found"

    escaped = await client.delete("/v1/dnc/%2B15559990002", headers=tenant.headers)
    assert escaped.status_code == 204
    assert await listed(client, tenant) == {}


@pytest.mark.parametrize("number", ["+15559990009", "garbage"])
async def test_delete_unknown_is_404(client, tenant, number) -> None:
    response = await client.delete(f"/v1/dnc/{number}", headers=tenant.headers)
    assert response.status_code == 404
    assert error_code(response) == "dnc_not_found"


async def test_a_listed_number_blocks_a_batch_until_removed(client, tenant, agent) -> None:
    await client.post("/v1/dnc", json={"phone_number": "+15559990001"}, headers=tenant.headers)
    body = {"agent_id": agent["id"], "to": ["+15559990001"]}
    blocked = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert blocked.status_code == 409
    await client.delete("/v1/dnc/+15559990001", headers=tenant.headers)
    allowed = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert allowed.status_code == 202
