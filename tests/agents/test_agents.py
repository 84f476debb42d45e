"""Agents: the persona a call is dialed with."""

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TenantHandle, create_agent, error_code, register_number

pytestmark = pytest.mark.one_backend

AGENT_FIELDS = {
    "id",
    "name",
    "rate_per_minute",
    "default_from_number",
    "voicemail_behavior",
    "voicemail_message",
    "post_call",
    "config",
    "stream_url",
    "stream_secret",
    "created_at",
    "updated_at",
}


def as_shown(agent: dict[str, Any]) -> dict[str, Any]:
    """The agent as GET, PUT and lists answer it: its stream secret masked."""
    return {**agent, "stream_secret": "whsec_****" + agent["stream_secret"][-4:]}


async def get_agent(client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str) -> Any:
    return await client.get(f"/v1/agents/{agent_id}", headers=tenant.headers)


async def put_agent(
    client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.put(f"/v1/agents/{agent_id}", json=body, headers=tenant.headers)


# --- create and read -----------------------------------------------------------------------


async def test_create_with_defaults(client, tenant) -> None:
    response = await client.post("/v1/agents", json={"name": "Ava"}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == AGENT_FIELDS
    assert str(uuid.UUID(body["id"])) == body["id"]  # a UUID, as the seed's agent_id
    assert body["name"] == "Ava"
    assert body["rate_per_minute"] == 0
    assert body["default_from_number"] is None
    assert body["voicemail_behavior"] == "hangup"
    assert body["voicemail_message"] is None
    assert body["post_call"] == {} and body["config"] == {}
    assert body["created_at"] == body["updated_at"]

    assert body["stream_url"] is None
    assert body["stream_secret"].startswith("whsec_")

    fetched = await get_agent(client, tenant, body["id"])
    assert fetched.status_code == 200
    assert fetched.json() == as_shown(body)


async def test_create_with_every_field(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990001")
    body = {
        "name": "Support line",
        "rate_per_minute": 0.125,
        "default_from_number": "+15559990001",
        "voicemail_behavior": "leave_message",
        "voicemail_message": "Please call us back.",
        "post_call": {"summary": True, "extract": {"fields": ["intent"]}},
        "config": {"voice": "alloy", "prompt": "Be brief.", "nested": {"n": [1, 2]}},
        "stream_url": "wss://agent.example.com/stream?tenant=7",
    }
    created = await create_agent(client, tenant, **body)
    for field, value in body.items():
        assert created[field] == value, field
    assert (await get_agent(client, tenant, created["id"])).json() == as_shown(created)


async def test_rate_keeps_micro_credit_precision(client, tenant) -> None:
    created = await create_agent(client, tenant, rate_per_minute="0.000001")
    assert created["rate_per_minute"] == 0.000001
    big = await create_agent(client, tenant, rate_per_minute=1_000_000)
    assert big["rate_per_minute"] == 1_000_000


async def test_get_accepts_uppercase_uuid(client, tenant) -> None:
    created = await create_agent(client, tenant)
    response = await get_agent(client, tenant, created["id"].upper())
    assert response.status_code == 200
    assert response.json()["id"] == created["id"]


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({}, [["name"]]),
        ({"name": ""}, [["name"]]),
        ({"name": "x" * 201}, [["name"]]),
        (
            {
                "name": "",
                "rate_per_minute": -1,
                "default_from_number": "12345",
                "voicemail_behavior": "sing",
                "voicemail_message": "x" * 5001,
                "post_call": [],
                "config": "nope",
                "stream_url": "https://agent.example.com",
                "colour": "red",
            },
            [
                ["rate_per_minute"],
                ["default_from_number"],
                ["voicemail_behavior"],
                ["voicemail_message"],
                ["post_call"],
                ["config"],
                ["stream_url"],
                ["name"],
                ["colour"],
            ],
        ),
        ({"name": "A", "rate_per_minute": 1_000_001}, [["rate_per_minute"]]),
        ({"name": "A", "rate_per_minute": "0.0000001"}, [["rate_per_minute"]]),
        ({"name": "A", "rate_per_minute": "lots"}, [["rate_per_minute"]]),
        ({"name": "A", "default_from_number": "+1555"}, [["default_from_number"]]),
    ],
    ids=[
        "missing-name",
        "empty-name",
        "long-name",
        "everything-wrong",
        "rate-too-high",
        "rate-below-micro",
        "rate-not-a-number",
        "from-not-possible",
    ],
)
async def test_create_validation_lists_every_bad_field(client, tenant, body, locs) -> None:
    response = await client.post("/v1/agents", json=body, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    error = response.json()["error"]
    assert sorted(d["loc"] for d in error["details"]) == sorted(locs)
    for detail in error["details"]:
        assert set(detail) == {"loc", "message", "type"}
        assert detail["message"]
    for loc in locs:
        assert ".".join(map(str, loc)) in error["message"]
    assert (await client.get("/v1/agents", headers=tenant.headers)).json()["data"] == []


async def test_malformed_json_is_400(client, tenant) -> None:
    response = await client.post(
        "/v1/agents",
        content=b'{"name": ',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


async def test_default_from_number_must_be_owned(client, tenant, make_tenant) -> None:
    other = await make_tenant()
    await register_number(client, other, "+15559990050")
    for number in ("+15559990050", "+15559990051"):  # another tenant's, and nobody's
        response = await client.post(
            "/v1/agents",
            json={"name": "A", "default_from_number": number},
            headers=tenant.headers,
        )
        assert response.status_code == 400
        assert error_code(response) == "from_number_not_owned"
        assert response.json()["error"]["details"] == {"from_numbers": [number]}
    assert (await client.get("/v1/agents", headers=tenant.headers)).json()["data"] == []


async def test_unknown_agent_is_404(client, tenant) -> None:
    for agent_id in (str(uuid.uuid4()), "not-a-uuid", "550e8400-e29b-41d4-a716-446655440000"):
        for method, body in (("GET", None), ("PUT", {"name": "B"}), ("DELETE", None)):
            response = await client.request(
                method, f"/v1/agents/{agent_id}", json=body, headers=tenant.headers
            )
            assert response.status_code == 404, (method, agent_id)
            assert error_code(response) == "agent_not_found"


async def test_idempotent_create(client, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "agent-1"}
    first = await client.post("/v1/agents", json={"name": "A"}, headers=headers)
    again = await client.post("/v1/agents", json={"name": "A"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = await client.post("/v1/agents", json={"name": "B"}, headers=headers)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    listed = (await client.get("/v1/agents", headers=tenant.headers)).json()["data"]
    assert [a["id"] for a in listed] == [first.json()["id"]]


# --- update --------------------------------------------------------------------------------


async def test_put_changes_only_the_fields_sent(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    created = await create_agent(
        client,
        tenant,
        rate_per_minute=0.5,
        voicemail_behavior="leave_message",
        voicemail_message="Hi",
        post_call={"summary": True},
        config={"voice": "alloy"},
    )
    response = await put_agent(client, tenant, created["id"], {"name": "Renamed"})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Renamed"
    unchanged = {k: v for k, v in as_shown(created).items() if k not in {"name", "updated_at"}}
    assert {k: updated[k] for k in unchanged} == unchanged
    assert updated["updated_at"] > created["updated_at"]

    response = await put_agent(
        client,
        tenant,
        created["id"],
        {"rate_per_minute": 0.25, "default_from_number": "+15559990000", "config": {}},
    )
    updated = response.json()
    assert updated["rate_per_minute"] == 0.25
    assert updated["default_from_number"] == "+15559990000"
    assert updated["config"] == {}
    assert updated["name"] == "Renamed"
    assert updated["post_call"] == {"summary": True}
    assert (await get_agent(client, tenant, created["id"])).json() == updated


async def test_put_null_clears_optional_fields_and_keeps_required_ones(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    created = await create_agent(
        client,
        tenant,
        rate_per_minute=0.5,
        default_from_number="+15559990000",
        voicemail_message="Hi",
        config={"voice": "alloy"},
    )
    response = await put_agent(
        client,
        tenant,
        created["id"],
        {
            "default_from_number": None,
            "voicemail_message": None,
            "name": None,
            "rate_per_minute": None,
            "config": None,
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["default_from_number"] is None
    assert updated["voicemail_message"] is None
    assert updated["name"] == created["name"]
    assert updated["config"] == {"voice": "alloy"}
    # a null rate must not make the agent's calls free
    assert updated["rate_per_minute"] == 0.5


async def test_put_validation_and_ownership(client, tenant, make_tenant) -> None:
    created = await create_agent(client, tenant)
    bad = await put_agent(
        client,
        tenant,
        created["id"],
        {"name": "", "voicemail_behavior": "sing", "rate_per_minute": -2, "id": "x"},
    )
    assert bad.status_code == 400
    assert error_code(bad) == "validation_error"
    locs = sorted(d["loc"] for d in bad.json()["error"]["details"])
    assert locs == [["id"], ["name"], ["rate_per_minute"], ["voicemail_behavior"]]

    other = await make_tenant()
    await register_number(client, other, "+15559990060")
    not_owned = await put_agent(
        client, tenant, created["id"], {"name": "B", "default_from_number": "+15559990060"}
    )
    assert not_owned.status_code == 400
    assert error_code(not_owned) == "from_number_not_owned"
    assert (await get_agent(client, tenant, created["id"])).json() == as_shown(created)


# --- delete --------------------------------------------------------------------------------


async def test_delete(client, tenant) -> None:
    keep = await create_agent(client, tenant, name="Keep")
    doomed = await create_agent(client, tenant, name="Doomed")
    response = await client.delete(f"/v1/agents/{doomed['id']}", headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""

    for method, body in (("GET", None), ("PUT", {"name": "Back"}), ("DELETE", None)):
        gone = await client.request(
            method, f"/v1/agents/{doomed['id']}", json=body, headers=tenant.headers
        )
        assert gone.status_code == 404, method
        assert error_code(gone) == "agent_not_found"
    listed = (await client.get("/v1/agents", headers=tenant.headers)).json()["data"]
    assert [a["id"] for a in listed] == [keep["id"]]

    # and it can no longer be dialed with
    await register_number(client, tenant, "+15559990000")
    batch = await client.post(
        "/v1/calls/batch",
        json={"agent_id": doomed["id"], "to": ["+15559990001"]},
        headers=tenant.headers,
    )
    assert batch.status_code == 404
    assert error_code(batch) == "agent_not_found"


# --- list ----------------------------------------------------------------------------------


async def test_list_pages_through_every_agent_once(client, tenant) -> None:
    created = {(await create_agent(client, tenant, name=f"A{i}"))["id"] for i in range(7)}
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if after is not None:
            params["after"] = after
        response = await client.get("/v1/agents", params=params, headers=tenant.headers)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"data", "next_cursor"}
        pages += 1
        seen.extend(a["id"] for a in page["data"])
        assert all(set(a) == AGENT_FIELDS for a in page["data"])
        after = page["next_cursor"]
        if after is None:
            break
        assert len(page["data"]) == 3
    assert pages == 3
    assert len(seen) == 7 and set(seen) == created

    exact = (await client.get("/v1/agents", params={"limit": 7}, headers=tenant.headers)).json()
    assert len(exact["data"]) == 7 and exact["next_cursor"] is None
    default = (await client.get("/v1/agents", headers=tenant.headers)).json()
    assert len(default["data"]) == 7 and default["next_cursor"] is None


async def test_list_default_limit_is_50(client, tenant) -> None:
    for i in range(51):
        await create_agent(client, tenant, name=f"A{i}")
    page = (await client.get("/v1/agents", headers=tenant.headers)).json()
    assert len(page["data"]) == 50
    assert page["next_cursor"] is not None
    rest = await client.get(
        "/v1/agents", params={"after": page["next_cursor"]}, headers=tenant.headers
    )
    assert len(rest.json()["data"]) == 1
    assert rest.json()["next_cursor"] is None
    maximum = await client.get("/v1/agents", params={"limit": 1000}, headers=tenant.headers)
    assert maximum.status_code == 200
    assert len(maximum.json()["data"]) == 51


@pytest.mark.parametrize("limit", ["1001", "0", "-1", "ten"])
async def test_list_limit_out_of_range_is_400(client, tenant, limit) -> None:
    response = await client.get("/v1/agents", params={"limit": limit}, headers=tenant.headers)
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert response.json()["error"]["details"][0]["loc"] == ["query", "limit"]


# --- the stream: stream_url and stream_secret ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://agent.example.com/stream",
        "http://agent.example.com",
        "agent.example.com/stream",
        "ws://",
        "wss:///no-host",
        "ftp://agent.example.com",
        "wss://agent.example.com:notaport/x",
        "wss://agent.example.com/x#frag",
        "",
        "wss://agent.example.com/" + "x" * 2048,
    ],
)
async def test_stream_url_must_be_a_websocket_url(client, tenant, url) -> None:
    created = await client.post(
        "/v1/agents", json={"name": "A", "stream_url": url}, headers=tenant.headers
    )
    assert created.status_code == 400, created.text
    assert error_code(created) == "validation_error"
    assert [d["loc"] for d in created.json()["error"]["details"]] == [["stream_url"]]
    assert "stream_url" in created.json()["error"]["message"]
    assert (await client.get("/v1/agents", headers=tenant.headers)).json()["data"] == []

    agent = await create_agent(client, tenant, stream_url="ws://127.0.0.1:8765/agent")
    changed = await put_agent(client, tenant, agent["id"], {"stream_url": url})
    assert changed.status_code == 400
    assert [d["loc"] for d in changed.json()["error"]["details"]] == [["stream_url"]]
    kept = (await get_agent(client, tenant, agent["id"])).json()
    assert kept["stream_url"] == "ws://127.0.0.1:8765/agent"


async def test_stream_url_can_be_set_changed_and_removed(client, tenant) -> None:
    agent = await create_agent(client, tenant)
    secret = agent["stream_secret"]
    for url in ("wss://agent.example.com/a?x=1", "ws://[::1]:9000/b", None):
        response = await put_agent(client, tenant, agent["id"], {"stream_url": url})
        assert response.status_code == 200, response.text
        assert response.json()["stream_url"] == url
        # a new URL keeps the secret: it is only ever replaced by rotate-secret
        assert response.json()["stream_secret"] == as_shown(agent)["stream_secret"]
    fetched = (await get_agent(client, tenant, agent["id"])).json()
    assert fetched["stream_secret"] == "whsec_****" + secret[-4:]


async def test_stream_secret_is_shown_in_full_only_at_create_and_rotate(client, tenant) -> None:
    agent = await create_agent(client, tenant, stream_url="wss://agent.example.com/s")
    secret = agent["stream_secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32
    shown_elsewhere = [
        (await get_agent(client, tenant, agent["id"])).json(),
        (await put_agent(client, tenant, agent["id"], {"name": "B"})).json(),
        (await client.get("/v1/agents", headers=tenant.headers)).json()["data"][0],
    ]
    for shown in shown_elsewhere:
        assert shown["stream_secret"] == "whsec_****" + secret[-4:]
        assert secret not in str(shown)

    rotated = await client.post(f"/v1/agents/{agent['id']}/rotate-secret", headers=tenant.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["stream_secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert set(rotated.json()) == AGENT_FIELDS
    assert rotated.json()["stream_url"] == "wss://agent.example.com/s"
    fetched = (await get_agent(client, tenant, agent["id"])).json()
    assert fetched["stream_secret"] == "whsec_****" + new_secret[-4:]


async def test_rotate_secret_honours_idempotency_key(client, tenant) -> None:
    agent = await create_agent(client, tenant)
    headers = {**tenant.headers, "Idempotency-Key": "rotate-1"}
    path = f"/v1/agents/{agent['id']}/rotate-secret"
    first = await client.post(path, headers=headers)
    again = await client.post(path, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["stream_secret"] == again.json()["stream_secret"]
    fresh = await client.post(path, headers=tenant.headers)
    assert fresh.json()["stream_secret"] != first.json()["stream_secret"]


async def test_rotate_secret_of_an_unknown_or_other_tenants_agent_is_404(
    client, tenant, make_tenant
) -> None:
    other = await make_tenant()
    theirs = await create_agent(client, other)
    for agent_id in (theirs["id"], str(uuid.uuid4()), "not-a-uuid"):
        response = await client.post(f"/v1/agents/{agent_id}/rotate-secret", headers=tenant.headers)
        assert response.status_code == 404, agent_id
        assert error_code(response) == "agent_not_found"
    fetched = await get_agent(client, other, theirs["id"])
    assert fetched.json()["stream_secret"] == as_shown(theirs)["stream_secret"]
