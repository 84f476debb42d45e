"""Numbers: the caller IDs a tenant owns, and which of them is its default."""

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import TenantHandle, error_code, register_number


async def listed(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/numbers", headers=tenant.headers)
    assert response.status_code == 200
    return {n["phone_number"]: n for n in response.json()["data"]}


async def default_of(client: httpx.AsyncClient, tenant: TenantHandle) -> list[str]:
    return [n for n, row in (await listed(client, tenant)).items() if row["is_default"]]


async def test_first_number_becomes_default(client, tenant) -> None:
    first = await register_number(client, tenant, "+15559990000", label="main")
    assert set(first) == {"phone_number", "label", "is_default", "created_at"}
    assert first == {**first, "phone_number": "+15559990000", "label": "main", "is_default": True}
    second = await register_number(client, tenant, "+15559990001")
    assert second["is_default"] is False
    assert second["label"] is None
    assert await default_of(client, tenant) == ["+15559990000"]


async def test_first_number_is_default_even_when_is_default_false(client, tenant) -> None:
    first = await register_number(client, tenant, "+15559990000", is_default=False)
    assert first["is_default"] is True


async def test_is_default_moves_the_default(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990001")
    moved = await register_number(client, tenant, "+15559990002", is_default=True)
    assert moved["is_default"] is True
    assert await default_of(client, tenant) == ["+15559990002"]
    rows = await listed(client, tenant)
    assert [rows[n]["is_default"] for n in sorted(rows)] == [False, False, True]


async def test_number_is_stored_in_e164(client, tenant) -> None:
    """Whitespace around an E.164 number is trimmed; the number is returned in E.164."""
    created = await register_number(client, tenant, " +15559990000 ")
    assert created["phone_number"] == "+15559990000"
    again = await client.post(
        "/v1/numbers", json={"phone_number": "+15559990000"}, headers=tenant.headers
    )
    assert again.status_code == 409


async def test_another_tenants_number_is_409(client, tenant, make_tenant) -> None:
    await register_number(client, tenant, "+15559990000", label="A's")
    other = await make_tenant()
    response = await client.post(
        "/v1/numbers", json={"phone_number": "+15559990000"}, headers=other.headers
    )
    assert response.status_code == 409
    assert error_code(response) == "number_already_registered"
    assert await listed(client, other) == {}
    mine = await listed(client, tenant)
    assert mine["+15559990000"]["label"] == "A's"
    assert mine["+15559990000"]["is_default"] is True


async def test_registering_own_number_twice_is_409(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    response = await client.post(
        "/v1/numbers",
        json={"phone_number": "+15559990000", "label": "again", "is_default": True},
        headers=tenant.headers,
    )
    assert response.status_code == 409
    assert error_code(response) == "number_already_registered"
    assert (await listed(client, tenant))["+15559990000"]["label"] is None


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({}, [["phone_number"]]),
        ({"phone_number": "15559990000"}, [["phone_number"]]),
        ({"phone_number": "+1555"}, [["phone_number"]]),
        ({"phone_number": "+1 555 999 0000"}, [["phone_number"]]),
        ({"phone_number": "+0123456789"}, [["phone_number"]]),
        ({"phone_number": "+4412"}, [["phone_number"]]),
        ({"phone_number": "+1555999000012345"}, [["phone_number"]]),
        ({"phone_number": 15559990000}, [["phone_number"]]),
        (
            {"phone_number": "nope", "label": "x" * 201, "is_default": "maybe", "x": 1},
            [["phone_number"], ["label"], ["is_default"], ["x"]],
        ),
    ],
    ids=[
        "missing",
        "no-plus",
        "too-short",
        "spaces",
        "leading-zero",
        "not-possible-gb",
        "too-long",
        "not-a-string",
        "everything-wrong",
    ],
)
async def test_bad_number_is_400(client, tenant, body, locs) -> None:
    response = await client.post("/v1/numbers", json=body, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert sorted(d["loc"] for d in response.json()["error"]["details"]) == sorted(locs)
    assert await listed(client, tenant) == {}


async def test_delete(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990001")
    response = await client.delete("/v1/numbers/+15559990001", headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert set(await listed(client, tenant)) == {"+15559990000"}
    assert await default_of(client, tenant) == ["+15559990000"]
    again = await client.delete("/v1/numbers/+15559990001", headers=tenant.headers)
    assert again.status_code == 404
    assert error_code(again) == "number_not_found"


async def test_delete_accepts_an_escaped_plus(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    response = await client.delete("/v1/numbers/%2B15559990000", headers=tenant.headers)
    assert response.status_code == 204
    assert await listed(client, tenant) == {}


async def test_deleting_the_default_promotes_the_oldest_remaining(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")  # default
    await register_number(client, tenant, "+15559990009")  # oldest after it
    await register_number(client, tenant, "+15559990001")  # sorts first, but younger
    response = await client.delete("/v1/numbers/+15559990000", headers=tenant.headers)
    assert response.status_code == 204
    assert await default_of(client, tenant) == ["+15559990009"]

    await register_number(client, tenant, "+15559990005", is_default=True)
    await client.delete("/v1/numbers/+15559990005", headers=tenant.headers)
    assert await default_of(client, tenant) == ["+15559990009"]

    await client.delete("/v1/numbers/+15559990009", headers=tenant.headers)
    assert await default_of(client, tenant) == ["+15559990001"]
    await client.delete("/v1/numbers/+15559990001", headers=tenant.headers)
    assert await listed(client, tenant) == {}
    # with none left, the next number registered is the default again
    assert (await register_number(client, tenant, "+15559990002"))["is_default"] is True


async def test_deleting_a_non_default_leaves_the_default(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990001")
    await register_number(client, tenant, "+15559990002", is_default=True)
    await client.delete("/v1/numbers/+15559990000", headers=tenant.headers)
    assert await default_of(client, tenant) == ["+15559990002"]


@pytest.mark.parametrize("number", ["+15559990099", "nonsense", "%2B15559990099"])
async def test_delete_unknown_is_404(client, tenant, number) -> None:
    await register_number(client, tenant, "+15559990000")
    response = await client.delete(f"/v1/numbers/{number}", headers=tenant.headers)
    assert response.status_code == 404
    assert error_code(response) == "number_not_found"
    assert set(await listed(client, tenant)) == {"+15559990000"}


async def test_list_pages(client, tenant) -> None:
    numbers = [f"+1555999{i:04d}" for i in range(5)]
    for n in reversed(numbers):
        await register_number(client, tenant, n)
    first = (await client.get("/v1/numbers", params={"limit": 2}, headers=tenant.headers)).json()
    assert [n["phone_number"] for n in first["data"]] == numbers[:2]
    assert first["next_cursor"] is not None
    rest = (
        await client.get(
            "/v1/numbers",
            params={"limit": 3, "after": first["next_cursor"]},
            headers=tenant.headers,
        )
    ).json()
    assert [n["phone_number"] for n in rest["data"]] == numbers[2:]
    assert rest["next_cursor"] is None
    too_many = await client.get("/v1/numbers", params={"limit": 1001}, headers=tenant.headers)
    assert too_many.status_code == 400
    assert error_code(too_many) == "validation_error"


async def test_idempotent_register(client, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "n-1"}
    body = {"phone_number": "+15559990000", "label": "main"}
    first = await client.post("/v1/numbers", json=body, headers=headers)
    again = await client.post("/v1/numbers", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    different = await client.post(
        "/v1/numbers", json={**body, "phone_number": "+15559990001"}, headers=headers
    )
    assert different.status_code == 422
    assert error_code(different) == "idempotency_key_reused"
    assert set(await listed(client, tenant)) == {"+15559990000"}


# --- concurrency ---------------------------------------------------------------------------


async def test_racing_tenants_for_one_number_get_one_201_and_409s(client, make_tenant) -> None:
    tenants = [await make_tenant() for _ in range(4)]
    responses = await asyncio.gather(
        *(
            client.post("/v1/numbers", json={"phone_number": "+15559990000"}, headers=t.headers)
            for t in tenants
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert error_code(response) == "number_already_registered"
    owners = [t for t, r in zip(tenants, responses, strict=True) if r.status_code == 201]
    assert set(await listed(client, owners[0])) == {"+15559990000"}


@pytest.mark.parametrize("is_default", [False, True])
async def test_racing_registrations_leave_exactly_one_default(client, tenant, is_default) -> None:
    numbers = [f"+1555999000{i}" for i in range(5)]
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/numbers",
                json={"phone_number": n, "is_default": is_default},
                headers=tenant.headers,
            )
            for n in numbers
        )
    )
    assert [r.status_code for r in responses] == [201] * 5
    defaults = await default_of(client, tenant)
    assert len(defaults) == 1
    if not is_default:  # the first to register is the default, and it said so
        assert [r.json()["phone_number"] for r in responses if r.json()["is_default"]] == defaults


# --- PUT /v1/numbers/{e164}: label and default ------------------------------------------------


async def put_number(
    client: httpx.AsyncClient, tenant: TenantHandle, number: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.put(f"/v1/numbers/{number}", json=body, headers=tenant.headers)


async def test_put_changes_the_label(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000", label="old")
    response = await put_number(client, tenant, "+15559990000", {"label": "main line"})
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "label": "main line", "is_default": True}
    assert (await listed(client, tenant))["+15559990000"]["label"] == "main line"
    kept = await put_number(client, tenant, "%2B15559990000", {})
    assert kept.json()["label"] == "main line"  # left out: kept
    cleared = await put_number(client, tenant, "+15559990000", {"label": None})
    assert cleared.json()["label"] is None


async def test_put_is_default_moves_the_default(client, tenant, app) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990001", label="second")
    response = await put_number(client, tenant, "+15559990001", {"is_default": True})
    assert response.status_code == 200, response.text
    assert response.json()["is_default"] is True and response.json()["label"] == "second"
    assert await default_of(client, tenant) == ["+15559990001"]
    again = await put_number(client, tenant, "+15559990001", {"is_default": True})
    assert again.status_code == 200
    assert await default_of(client, tenant) == ["+15559990001"]
    # is_default false on a number that is not the default changes nothing
    other = await put_number(client, tenant, "+15559990000", {"is_default": False})
    assert other.status_code == 200 and other.json()["is_default"] is False

    # the new default is the caller ID of calls that name none
    agent = await client.post("/v1/agents", json={"name": "a"}, headers=tenant.headers)
    call = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent.json()["id"], "to": ["+15559990055"]},
        headers=tenant.headers,
    )
    assert call.status_code == 202, call.text
    fetched = await client.get(f"/v1/calls/{call.json()['id']}", headers=tenant.headers)
    assert fetched.json()["participants"][0]["from_number"] == "+15559990001"


async def test_put_is_default_false_on_the_default_is_409(client, tenant) -> None:
    """A tenant with numbers always has a default: it is changed by making another number
    the default, not by unsetting it."""
    await register_number(client, tenant, "+15559990000", label="main")
    await register_number(client, tenant, "+15559990001")
    before = await listed(client, tenant)
    response = await put_number(
        client, tenant, "+15559990000", {"is_default": False, "label": "renamed"}
    )
    assert response.status_code == 409
    assert error_code(response) == "default_number_required"
    assert await listed(client, tenant) == before


@pytest.mark.parametrize("number", ["+15559990099", "nonsense", "%2B15559990099"])
async def test_put_unknown_is_404(client, tenant, number) -> None:
    await register_number(client, tenant, "+15559990000")
    response = await put_number(client, tenant, number, {"label": "x"})
    assert response.status_code == 404
    assert error_code(response) == "number_not_found"


async def test_put_another_tenants_number_is_404_and_changes_nothing(
    client, tenant, make_tenant
) -> None:
    await register_number(client, tenant, "+15559990000", label="A's")
    await register_number(client, tenant, "+15559990001")
    other = await make_tenant()
    await register_number(client, other, "+15559990100")
    before = await listed(client, tenant)
    for body in ({"label": "B's"}, {"is_default": True}, {"is_default": False}):
        response = await put_number(client, other, "+15559990001", body)
        assert response.status_code == 404
        assert error_code(response) == "number_not_found"
    assert await listed(client, tenant) == before
    assert await default_of(client, other) == ["+15559990100"]


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"label": "x" * 201}, [["label"]]),
        ({"is_default": "maybe"}, [["is_default"]]),
        ({"phone_number": "+15559990001"}, [["phone_number"]]),
        ({"label": 5, "x": 1}, [["label"], ["x"]]),
    ],
    ids=["label-too-long", "not-a-bool", "number-is-the-path", "everything-wrong"],
)
async def test_put_bad_body_is_400(client, tenant, body, locs) -> None:
    await register_number(client, tenant, "+15559990000", label="main")
    response = await put_number(client, tenant, "+15559990000", body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert sorted(d["loc"] for d in response.json()["error"]["details"]) == sorted(locs)
    assert (await listed(client, tenant))["+15559990000"]["label"] == "main"


async def test_racing_default_changes_leave_exactly_one_default(client, tenant) -> None:
    numbers = [f"+1555999000{i}" for i in range(5)]
    for n in numbers:
        await register_number(client, tenant, n)
    responses = await asyncio.gather(
        *(put_number(client, tenant, n, {"is_default": True}) for n in numbers)
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert len(await default_of(client, tenant)) == 1
