"""API keys: creation, listing, deletion, authentication and what a publishable key may do."""

import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from outdial.keys.models import ApiKey
from outdial.models import metadata
from tests.conftest import TenantHandle, client_from, error_code, fresh_address, register_number
from tests.routes import PUBLIC, api_routes, fill

pytestmark = pytest.mark.one_backend

# The only routes a publishable key may use; every other route answers it 403.
# API.md: a publishable key may only POST /v1/calls; "anything else → 403".
PUBLISHABLE_ALLOWED = {("POST", "/v1/calls")}

KEY_FIELDS = {
    "id",
    "type",
    "label",
    "last4",
    "agent_id",
    "channels",
    "default_from_number",
    "variables",
    "created_at",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_key(
    client: httpx.AsyncClient, tenant: TenantHandle, **body: Any
) -> httpx.Response:
    return await client.post("/v1/keys", json=body, headers=tenant.headers)


async def publishable(client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str) -> str:
    response = await create_key(client, tenant, type="publishable", agent_id=agent_id)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def concrete(path: str) -> str:
    """The route's path with every parameter filled in with a plausible, unknown value."""
    return fill(path, default="00000000-0000-4000-8000-000000000000")


# --- creation ------------------------------------------------------------------------------


async def test_create_secret_key_shows_plaintext_once(client, tenant) -> None:
    response = await create_key(client, tenant, type="secret", label="server")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == KEY_FIELDS | {"key"}
    assert body["id"].startswith("key_")
    assert body["type"] == "secret"
    assert body["label"] == "server"
    assert body["key"].startswith("sb_secret_")
    assert body["last4"] == body["key"][-4:]

    listed = (await client.get("/v1/keys", headers=tenant.headers)).json()
    assert listed["next_cursor"] is None
    mine = [k for k in listed["data"] if k["id"] == body["id"]]
    assert len(mine) == 1
    assert set(mine[0]) == KEY_FIELDS  # never the plaintext again
    assert body["key"] not in (await client.get("/v1/keys", headers=tenant.headers)).text

    # The new key works on its own.
    me = await client.get("/v1/auth/me", headers=bearer(body["key"]))
    assert me.status_code == 200
    assert me.json()["key_id"] == body["id"]
    assert me.json()["tenant_id"] == tenant.id


async def test_create_publishable_key(client, tenant, agent) -> None:
    response = await create_key(
        client,
        tenant,
        type="publishable",
        label="web widget",
        agent_id=agent["id"],
        channels=["web"],
        default_from_number="+15559990000",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key"].startswith("sb_publishable_")
    assert body["type"] == "publishable"
    assert body["agent_id"] == agent["id"]
    assert body["channels"] == ["web"]
    assert body["default_from_number"] == "+15559990000"


async def test_publishable_channels_default_to_both_and_are_deduplicated(
    client, tenant, agent
) -> None:
    both = await create_key(client, tenant, type="publishable", agent_id=agent["id"])
    assert both.json()["channels"] == ["phone", "web"]
    twice = await create_key(
        client, tenant, type="publishable", agent_id=agent["id"], channels=["web", "web"]
    )
    assert twice.status_code == 201
    assert twice.json()["channels"] == ["web"]


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({}, [["type"]]),
        ({"type": "admin"}, [["type"]]),
        ({"type": "publishable"}, [[]]),  # no agent_id
        ({"type": "secret", "agent_id": "A"}, [[]]),
        ({"type": "secret", "channels": ["web"]}, [[]]),
        ({"type": "secret", "variables": {"a": 1}}, [[]]),
        ({"type": "publishable", "agent_id": "A", "variables": ["a"]}, [["variables"]]),
        (
            {"type": "publishable", "agent_id": "A", "variables": {str(n): n for n in range(101)}},
            [["variables"]],
        ),
        ({"type": "publishable", "agent_id": "A", "channels": []}, [["channels"]]),
        (
            {"type": "publishable", "agent_id": "A", "channels": ["web", "sms", "fax"]},
            [["channels", 1], ["channels", 2]],
        ),
        (
            {"type": "publishable", "agent_id": "A", "default_from_number": "555-1234"},
            [["default_from_number"]],
        ),
        ({"type": "secret", "label": "x" * 201, "colour": "red"}, [["label"], ["colour"]]),
    ],
    ids=[
        "missing-type",
        "bad-type",
        "publishable-without-agent",
        "secret-with-agent",
        "secret-with-channels",
        "secret-with-variables",
        "variables-not-an-object",
        "too-many-variables",
        "empty-channels",
        "bad-channels",
        "bad-from-number",
        "long-label-and-unknown-field",
    ],
)
async def test_create_validation_errors(client, tenant, agent, app, body, locs) -> None:
    if body.get("agent_id") == "A":
        body = {**body, "agent_id": agent["id"]}
    response = await create_key(client, tenant, **body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert [d["loc"] for d in response.json()["error"]["details"]] == locs
    async with app.state.sessionmaker() as session:
        assert len((await session.scalars(select(ApiKey))).all()) == 1  # the tenant's own


async def test_publishable_key_needs_an_agent_of_the_tenant(
    client, tenant, agent, make_tenant
) -> None:
    unknown = await create_key(
        client, tenant, type="publishable", agent_id="550e8400-e29b-41d4-a716-446655440000"
    )
    assert unknown.status_code == 404
    assert error_code(unknown) == "agent_not_found"

    not_a_uuid = await create_key(client, tenant, type="publishable", agent_id="nope")
    assert not_a_uuid.status_code == 404
    assert error_code(not_a_uuid) == "agent_not_found"

    other = await make_tenant()
    foreign = await create_key(client, other, type="publishable", agent_id=agent["id"])
    assert foreign.status_code == 404
    assert error_code(foreign) == "agent_not_found"

    await client.delete(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    deleted = await create_key(client, tenant, type="publishable", agent_id=agent["id"])
    assert deleted.status_code == 404
    assert error_code(deleted) == "agent_not_found"


async def test_publishable_default_from_number_must_be_owned(
    client, tenant, agent, make_tenant
) -> None:
    other = await make_tenant()
    await register_number(client, other, "+15559990077")
    response = await create_key(
        client,
        tenant,
        type="publishable",
        agent_id=agent["id"],
        default_from_number="+15559990077",
    )
    assert response.status_code == 400
    assert error_code(response) == "from_number_not_owned"
    assert response.json()["error"]["details"] == {"from_numbers": ["+15559990077"]}


# --- storage -------------------------------------------------------------------------------


async def all_stored_text(app) -> str:
    """Every value of every row of every table, as text."""
    chunks = []
    async with app.state.sessionmaker() as session:
        for table in metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            chunks.extend(repr(tuple(row)) for row in rows)
    return "\n".join(chunks)


async def test_keys_are_stored_only_as_sha256_digests(client, tenant, agent, app) -> None:
    secret = (await create_key(client, tenant, type="secret")).json()
    public = (await create_key(client, tenant, type="publishable", agent_id=agent["id"])).json()
    # also when created under an Idempotency-Key, whose answer is kept for replays
    replayable = await client.post(
        "/v1/keys",
        json={"type": "secret", "label": "retried"},
        headers={**tenant.headers, "Idempotency-Key": "key-1"},
    )
    assert replayable.status_code == 201
    created = [secret, public, replayable.json()]

    async with app.state.sessionmaker() as session:
        for key in created:
            row = await session.get(ApiKey, key["id"])
            assert row is not None
            assert row.digest == hashlib.sha256(key["key"].encode()).hexdigest()
            assert key["key"] not in repr(
                {c.key: getattr(row, c.key) for c in ApiKey.__mapper__.column_attrs}
            )
    dump = await all_stored_text(app)
    for key in [*created, {"key": tenant.key}]:
        assert key["key"] not in dump
        assert key["key"].split("_", 2)[-1] not in dump  # nor its random part

    # A replay is the same key object, but the plaintext is not shown a second time.
    replay = await client.post(
        "/v1/keys",
        json={"type": "secret", "label": "retried"},
        headers={**tenant.headers, "Idempotency-Key": "key-1"},
    )
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == replayable.json()["id"]
    assert replay.json()["key"] is None
    reused = await client.post(
        "/v1/keys",
        json={"type": "secret", "label": "another"},
        headers={**tenant.headers, "Idempotency-Key": "key-1"},
    )
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    listed = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
    assert len(listed) == 4  # the tenant's first key and the three above, no more


async def test_unknown_key_with_a_real_digest_prefix_is_401(client, tenant) -> None:
    """Only the exact key authenticates, not its digest nor a near miss."""
    digest = hashlib.sha256(tenant.key.encode()).hexdigest()
    for token in (digest, "sb_secret_" + digest, tenant.key[:-1], tenant.key + "x"):
        response = await client.get("/v1/auth/me", headers=bearer(token))
        assert response.status_code == 401, token
        assert error_code(response) == "invalid_api_key"


# --- listing and deletion ------------------------------------------------------------------


async def test_list_keys_pages(client, tenant) -> None:
    for i in range(4):
        assert (await create_key(client, tenant, type="secret", label=f"k{i}")).status_code == 201
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (await client.get("/v1/keys", params=params, headers=tenant.headers)).json()
        assert len(page["data"]) <= 2
        seen.extend(k["id"] for k in page["data"])
        after = page["next_cursor"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen)

    too_many = await client.get("/v1/keys", params={"limit": 1001}, headers=tenant.headers)
    assert too_many.status_code == 400
    assert error_code(too_many) == "validation_error"


async def test_deleted_key_stops_working_at_once(client, tenant, agent) -> None:
    created = (await create_key(client, tenant, type="secret", label="doomed")).json()
    public = (await create_key(client, tenant, type="publishable", agent_id=agent["id"])).json()
    for key, works in ((created, 200), (public, 403)):  # a publishable key may not read /me
        assert (await client.get("/v1/auth/me", headers=bearer(key["key"]))).status_code == works
        response = await client.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert response.status_code == 204
        assert response.content == b""
        after = await client.get("/v1/auth/me", headers=bearer(key["key"]))
        assert after.status_code == 401
        assert error_code(after) == "invalid_api_key"

    again = await client.delete(f"/v1/keys/{created['id']}", headers=tenant.headers)
    assert again.status_code == 404
    assert error_code(again) == "key_not_found"
    ids = [k["id"] for k in (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]]
    assert created["id"] not in ids and public["id"] not in ids
    # the tenant's own key still works
    assert (await client.get("/v1/auth/me", headers=tenant.headers)).status_code == 200


async def test_a_key_can_delete_itself(client, tenant) -> None:
    created = (await create_key(client, tenant, type="secret")).json()
    response = await client.delete(f"/v1/keys/{created['id']}", headers=bearer(created["key"]))
    assert response.status_code == 204
    assert (await client.get("/v1/keys", headers=bearer(created["key"]))).status_code == 401


async def test_delete_unknown_key_is_404(client, tenant) -> None:
    response = await client.delete("/v1/keys/key_nope", headers=tenant.headers)
    assert response.status_code == 404
    assert error_code(response) == "key_not_found"


# --- /v1/auth/me ---------------------------------------------------------------------------


async def test_me_with_a_secret_key(client, make_tenant) -> None:
    tenant = await make_tenant(max_concurrency=7, calls_per_second=1.5)
    response = await client.get("/v1/auth/me", headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["tenant_id"] == tenant.id
    assert body["tenant_name"].startswith("tenant-")
    assert body["key_id"].startswith("key_")
    assert body["key_type"] == "secret"
    assert body["max_concurrency"] == 7
    assert body["calls_per_second"] == 1.5


async def test_me_refuses_a_publishable_key(client, tenant, agent) -> None:
    created = await create_key(
        client, tenant, type="publishable", agent_id=agent["id"], channels=["phone"]
    )
    response = await client.get("/v1/auth/me", headers=bearer(created.json()["key"]))
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"


# --- 401: missing, unknown, malformed ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": ""}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "sb_secret_abc"}, "missing_api_key"),
        ({"Authorization": "Bearer sb_secret_unknown"}, "invalid_api_key"),
        ({"Authorization": "Bearer sb_publishable_unknown"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk_live_123"}, "invalid_api_key"),
        ({"Authorization": "Bearer sb_secret_"}, "invalid_api_key"),
        ({"Authorization": "Bearer a b c"}, "invalid_api_key"),
    ],
    ids=[
        "none",
        "empty",
        "bearer-without-key",
        "bearer-blank",
        "basic",
        "no-scheme",
        "unknown-secret",
        "unknown-publishable",
        "foreign-prefix",
        "prefix-only",
        "spaces",
    ],
)
async def test_missing_unknown_or_malformed_key_is_401(client, tenant, headers, code) -> None:
    response = await client.get("/v1/auth/me", headers=headers)
    assert response.status_code == 401, response.text
    assert error_code(response) == code


async def test_every_route_wants_a_key(tenant, app) -> None:
    """Route by route: without a key, or with an unknown one, every API route answers 401.
    (Each route is asked from an address of its own: 20 unknown keys lock one out.)"""
    checked = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC:
            continue
        url = concrete(path)
        async with client_from(app, fresh_address()) as client:
            for headers, code in (
                ({}, "missing_api_key"),
                (bearer("sb_secret_x"), "invalid_api_key"),
            ):
                response = await client.request(method, url, json={}, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
                assert error_code(response) == code, (method, path)
        checked += 1
    assert checked >= 15


async def test_tenant_key_works_case_insensitive_scheme(client, tenant) -> None:
    response = await client.get("/v1/auth/me", headers={"Authorization": f"bearer {tenant.key}"})
    assert response.status_code == 200


# --- publishable keys: POST /v1/calls only -------------------------------------------------


async def test_publishable_key_is_forbidden_everywhere_else(client, tenant, agent, app) -> None:
    """Route by route, from the application's own routing table: a publishable key answers 403
    `publishable_key_forbidden` on everything but the routes allowed to it. (A key of its own
    for each route: a publishable key may make 10 requests a second.)"""
    routes = {(method, path) for method, path in api_routes(app)}
    assert PUBLISHABLE_ALLOWED <= routes, "an allowed route has gone; update the list"
    forbidden = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC | PUBLISHABLE_ALLOWED:
            continue
        key = await publishable(client, tenant, agent["id"])
        for body in ({}, None):
            response = await client.request(method, concrete(path), json=body, headers=bearer(key))
            assert response.status_code == 403, (method, path, response.text)
            assert error_code(response) == "publishable_key_forbidden", (method, path)
        forbidden += 1
    assert forbidden == len(routes - PUBLIC - PUBLISHABLE_ALLOWED)
    assert forbidden >= 15

    # and nothing was created or deleted by those attempts
    listed = (await client.get("/v1/agents", headers=tenant.headers)).json()["data"]
    assert [(a["id"], a["updated_at"]) for a in listed] == [(agent["id"], agent["updated_at"])]
    listed = (await client.get("/v1/keys", headers=tenant.headers, params={"limit": 1000})).json()
    assert len(listed["data"]) == 1 + forbidden


async def test_publishable_key_may_call_its_own_agent(client, tenant, agent) -> None:
    key = await publishable(client, tenant, agent["id"])
    body = {
        "agent_id": agent["id"],
        "participants": [{"transport": "pstn", "identity": "+15559990001"}],
    }
    response = await client.post("/v1/calls", json=body, headers=bearer(key))
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 1


async def test_publishable_key_may_not_call_another_agent(client, tenant, agent) -> None:
    key = await publishable(client, tenant, agent["id"])
    other = (await client.post("/v1/agents", json={"name": "Other"}, headers=tenant.headers)).json()
    body = {
        "agent_id": other["id"],
        "participants": [{"transport": "pstn", "identity": "+15559990001"}],
    }
    response = await client.post("/v1/calls", json=body, headers=bearer(key))
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"


async def test_publishable_key_is_bound_to_its_channels(client, tenant, agent) -> None:
    created = await create_key(
        client, tenant, type="publishable", agent_id=agent["id"], channels=["web"]
    )
    body = {"participants": [{"transport": "pstn", "identity": "+15559990001"}]}
    response = await client.post("/v1/calls", json=body, headers=bearer(created.json()["key"]))
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"


async def test_the_last_secret_key_cannot_be_deleted(client, tenant) -> None:
    keys = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
    (only,) = [k for k in keys if k["type"] == "secret"]
    refused = await client.delete(f"/v1/keys/{only['id']}", headers=tenant.headers)
    assert refused.status_code == 409
    assert error_code(refused) == "last_secret_key"
    assert (await client.get("/v1/auth/me", headers=tenant.headers)).status_code == 200
    spare = (await create_key(client, tenant, type="secret")).json()
    deleted = await client.delete(f"/v1/keys/{only['id']}", headers=tenant.headers)
    assert deleted.status_code == 204
    assert (await client.get("/v1/auth/me", headers=bearer(spare["key"]))).status_code == 200
