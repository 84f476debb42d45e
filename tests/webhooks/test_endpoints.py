"""`/v1/webhooks`: create, list, fetch, change, delete; secrets; event filters; URLs that may
not be reached; tenancy; idempotency."""

import re

import httpx
import pytest

from tests.conftest import TenantHandle, error_code
from tests.webhooks.conftest import create_webhook

pytestmark = pytest.mark.api_shape

PUBLIC_URL = "https://93.184.215.14/outdial"  # an IP literal: no DNS needed, never reached
ALL_TYPES = [
    "call.participant.updated",
    "call.completed",
    "batch.completed",
    "campaign.started",
    "campaign.paused",
    "campaign.resumed",
    "campaign.completed",
]


async def test_create_shows_the_secret_once(client: httpx.AsyncClient, tenant) -> None:
    created = await create_webhook(client, tenant, PUBLIC_URL, description="billing")
    assert re.fullmatch(r"wh_[0-9a-f]+", created["id"])
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{32}", created["secret"])
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["*"]
    assert created["description"] == "billing"
    assert created["status"] == "enabled"
    assert created["disabled_reason"] is None
    assert created["failing_since"] is None

    fetched = await client.get(f"/v1/webhooks/{created['id']}", headers=tenant.headers)
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert fetched.json() == {k: v for k, v in created.items() if k != "secret"}
    listed = await client.get("/v1/webhooks", headers=tenant.headers)
    assert listed.json() == {"data": [fetched.json()], "next_cursor": None}


async def test_every_event_type_can_be_chosen(client: httpx.AsyncClient, tenant) -> None:
    created = await create_webhook(client, tenant, PUBLIC_URL, events=[*ALL_TYPES, ALL_TYPES[0]])
    assert created["events"] == ALL_TYPES  # repeats dropped, order kept


async def test_unknown_event_types_are_listed(client: httpx.AsyncClient, tenant) -> None:
    response = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "events": ["call.completed", "call.exploded", "everything"]},
        headers=tenant.headers,
    )
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    message = response.json()["error"]["details"][0]["message"]
    assert "'call.exploded'" in message and "'everything'" in message
    assert "'call.completed'" not in message.split("(known")[0]
    for body in ({"url": PUBLIC_URL, "events": []}, {"url": PUBLIC_URL, "events": "*"}):
        response = await client.post("/v1/webhooks", json=body, headers=tenant.headers)
        assert response.status_code == 400, body
    assert (await client.get("/v1/webhooks", headers=tenant.headers)).json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "93.184.215.14/x",
        "https://",
        "http://:80/x",
        "https://93.184.215.14:99999/",
        "not a url",
        "",
    ],
)
async def test_a_url_that_is_not_http_is_refused(client: httpx.AsyncClient, tenant, url) -> None:
    response = await client.post("/v1/webhooks", json={"url": url}, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_url"


async def test_a_host_that_does_not_resolve_is_refused(client: httpx.AsyncClient, tenant) -> None:
    response = await client.post(
        "/v1/webhooks", json={"url": "https://no-such-host.invalid/x"}, headers=tenant.headers
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid_url"
    assert "does not resolve" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://127.9.9.9:8080/hooks",
        "http://localhost:8000/hooks",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "https://192.168.1.10/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    ],
)
async def test_private_addresses_are_refused(client: httpx.AsyncClient, tenant, url) -> None:
    response = await client.post("/v1/webhooks", json={"url": url}, headers=tenant.headers)
    assert response.status_code == 400, url
    assert error_code(response) == "url_not_allowed"
    assert "OUTDIAL_WEBHOOK_ALLOW_PRIVATE_URLS" in response.json()["error"]["message"]


async def test_private_addresses_are_allowed_by_the_setting(
    client: httpx.AsyncClient, tenant, allow_private
) -> None:
    created = await create_webhook(client, tenant, "http://127.0.0.1:9/hooks")
    assert created["url"] == "http://127.0.0.1:9/hooks"
    # Still http(s) only.
    response = await client.post(
        "/v1/webhooks", json={"url": "ftp://127.0.0.1/"}, headers=tenant.headers
    )
    assert error_code(response) == "invalid_url"


async def test_update_changes_what_is_sent(client: httpx.AsyncClient, tenant) -> None:
    created = await create_webhook(client, tenant, PUBLIC_URL, description="old")
    path = f"/v1/webhooks/{created['id']}"
    response = await client.put(
        path,
        json={"url": "https://93.184.215.15/new", "events": ["campaign.completed"]},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["url"] == "https://93.184.215.15/new"
    assert changed["events"] == ["campaign.completed"]
    assert changed["description"] == "old"  # not sent, kept
    assert "secret" not in changed
    cleared = await client.put(path, json={"description": None}, headers=tenant.headers)
    assert cleared.json()["description"] is None

    for body, code in [
        ({"url": "http://127.0.0.1/"}, "url_not_allowed"),
        ({"url": "gopher://x/"}, "invalid_url"),
        ({"events": ["nope"]}, "validation_error"),
        ({"status": "paused"}, "validation_error"),
        ({"secret": "whsec_mine"}, "validation_error"),
    ]:
        response = await client.put(path, json=body, headers=tenant.headers)
        assert response.status_code == 400, body
        assert error_code(response) == code
    assert (await client.get(path, headers=tenant.headers)).json() == cleared.json()


async def test_disable_and_enable(client: httpx.AsyncClient, tenant) -> None:
    created = await create_webhook(client, tenant, PUBLIC_URL)
    path = f"/v1/webhooks/{created['id']}"
    disabled = await client.put(path, json={"status": "disabled"}, headers=tenant.headers)
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["disabled_reason"] == "manual"
    enabled = await client.put(path, json={"status": "enabled"}, headers=tenant.headers)
    assert enabled.json()["status"] == "enabled"
    assert enabled.json()["disabled_reason"] is None


async def test_delete(client: httpx.AsyncClient, tenant) -> None:
    created = await create_webhook(client, tenant, PUBLIC_URL)
    path = f"/v1/webhooks/{created['id']}"
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    for method in ("GET", "DELETE"):
        response = await client.request(method, path, headers=tenant.headers)
        assert response.status_code == 404
        assert error_code(response) == "webhook_not_found"
    assert (await client.get("/v1/webhooks", headers=tenant.headers)).json()["data"] == []


async def test_list_pages(client: httpx.AsyncClient, tenant) -> None:
    ids = [(await create_webhook(client, tenant, PUBLIC_URL))["id"] for _ in range(3)]
    first = (await client.get("/v1/webhooks?limit=2", headers=tenant.headers)).json()
    assert [w["id"] for w in first["data"]] == ids[:2]
    rest = await client.get(
        "/v1/webhooks", params={"limit": 2, "after": first["next_cursor"]}, headers=tenant.headers
    )
    assert [w["id"] for w in rest.json()["data"]] == ids[2:]
    assert rest.json()["next_cursor"] is None


async def test_another_tenants_webhook_is_404(
    client: httpx.AsyncClient, tenant, make_tenant
) -> None:
    other = await make_tenant()
    created = await create_webhook(client, tenant, PUBLIC_URL)
    path = f"/v1/webhooks/{created['id']}"
    for method, suffix, body in [
        ("GET", "", None),
        ("PUT", "", {"status": "disabled"}),
        ("DELETE", "", None),
        ("GET", "/deliveries", None),
        ("POST", "/deliveries/dlv_000000000001/retry", None),
    ]:
        response = await client.request(method, path + suffix, json=body, headers=other.headers)
        assert response.status_code == 404, (method, suffix)
        assert error_code(response) == "webhook_not_found"
    assert (await client.get("/v1/webhooks", headers=other.headers)).json()["data"] == []
    assert (await client.get(path, headers=tenant.headers)).json()["status"] == "enabled"


async def test_publishable_keys_are_forbidden(client: httpx.AsyncClient, tenant, agent) -> None:
    key = await client.post(
        "/v1/keys",
        json={"type": "publishable", "agent_id": agent["id"]},
        headers=tenant.headers,
    )
    publishable = TenantHandle(id=tenant.id, key=key.json()["key"])
    created = await create_webhook(client, tenant, PUBLIC_URL)
    for method, path in [
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{created['id']}"),
        ("PUT", f"/v1/webhooks/{created['id']}"),
        ("DELETE", f"/v1/webhooks/{created['id']}"),
        ("GET", f"/v1/webhooks/{created['id']}/deliveries"),
    ]:
        response = await client.request(
            method, path, json={"url": PUBLIC_URL}, headers=publishable.headers
        )
        assert response.status_code == 403, (method, path)
        assert error_code(response) == "publishable_key_forbidden"
    unauthenticated = await client.get("/v1/webhooks")
    assert unauthenticated.status_code == 401


async def test_idempotent_create(client: httpx.AsyncClient, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "wh-1"}
    first = await client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=headers)
    again = await client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the secret too: a client retrying needs it
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        "/v1/webhooks", json={"url": PUBLIC_URL, "description": "x"}, headers=headers
    )
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    listed = (await client.get("/v1/webhooks", headers=tenant.headers)).json()["data"]
    assert [w["id"] for w in listed] == [first.json()["id"]]


async def test_a_webhook_needs_a_url(client: httpx.AsyncClient, tenant) -> None:
    for body in ({}, {"events": ["*"]}, {"url": None}, {"url": "x" * 2049}):
        response = await client.post("/v1/webhooks", json=body, headers=tenant.headers)
        assert response.status_code == 400, body
        assert [d["loc"] for d in response.json()["error"]["details"]] == [["url"]]


async def test_unknown_fields_are_refused(client: httpx.AsyncClient, tenant) -> None:
    response = await client.post(
        "/v1/webhooks",
        json={"url": PUBLIC_URL, "secret": "whsec_mine", "status": "disabled"},
        headers=tenant.headers,
    )
    assert response.status_code == 400
    bad = {tuple(d["loc"]) for d in response.json()["error"]["details"]}
    assert bad == {("secret",), ("status",)}
