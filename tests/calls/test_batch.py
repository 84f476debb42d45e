"""POST /v1/calls/batch, as the Queue & Fanout seed shows it."""

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from outdial.calls.models import Call, Participant
from outdial.dialer.models import DialJob
from tests.conftest import TenantHandle, error_code, register_number

SEED_SIMPLE = {
    "agent_id": "550e8400-e29b-41d4-a716-446655440000",
    "to": ["+15559990001", "+15559990002"],
    "from_number": "+15559990000",
    "metadata": {"batch_label": "promo-q1"},
    "variables": {"campaign": "spring-offer"},
}

SEED_RECIPIENTS = {
    "agent_id": "550e8400-e29b-41d4-a716-446655440000",
    "recipients": [
        {
            "to": "+15559990001",
            "from_number": "+15559990000",
            "metadata": {"name": "Alice", "plan": "Gold"},
        },
        {"to": "+15559990002", "metadata": {"name": "Bob", "plan": "Silver"}},
    ],
    "from_number": "+15559990000",
    "batch_id": "promo-q1-2026",
    "variables": {"campaign": "spring-offer"},
}


def with_agent(body: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
    return {**body, "agent_id": agent["id"]}


async def post_batch(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post("/v1/calls/batch", json=body, headers={**tenant.headers, **headers})


def assert_seed_response(body: dict[str, Any], numbers: list[str]) -> None:
    assert set(body) == {"id", "room_name", "status", "batch_id", "queued", "participants"}
    assert body["id"].startswith("call_")
    assert body["room_name"] == "call_" + body["id"]
    assert body["status"] == "queued"
    assert body["queued"] == len(numbers)
    assert [p["identity"] for p in body["participants"]] == numbers
    for p in body["participants"]:
        assert set(p) == {"id", "transport", "identity", "status", "telephony_leg_id", "job_id"}
        assert p["id"].startswith("participant_")
        assert p["telephony_leg_id"].startswith("leg_")
        assert p["job_id"].startswith("job_")
        assert p["transport"] == "pstn"
        assert p["status"] == "queued"


async def test_seed_simple_batch(client, tenant, agent) -> None:
    response = await post_batch(client, tenant, with_agent(SEED_SIMPLE, agent))
    assert response.status_code == 202, response.text
    body = response.json()
    assert_seed_response(body, ["+15559990001", "+15559990002"])
    assert body["batch_id"].startswith("batch_")

    call = (await client.get(f"/v1/calls/{body['id']}", headers=tenant.headers)).json()
    assert call["metadata"] == {"batch_label": "promo-q1"}
    assert call["variables"] == {"campaign": "spring-offer"}
    assert call["from_number"] == "+15559990000"
    assert call["participant_counts"] == {"queued": 2}


async def test_seed_per_recipient_batch(client, tenant, agent, app) -> None:
    response = await post_batch(client, tenant, with_agent(SEED_RECIPIENTS, agent))
    assert response.status_code == 202, response.text
    body = response.json()
    assert_seed_response(body, ["+15559990001", "+15559990002"])
    assert body["batch_id"] == "promo-q1-2026"

    call = (await client.get(f"/v1/calls/{body['id']}", headers=tenant.headers)).json()
    metadata = [p["metadata"] for p in call["participants"]]
    assert metadata == [{"name": "Alice", "plan": "Gold"}, {"name": "Bob", "plan": "Silver"}]

    async with app.state.sessionmaker() as session:
        jobs = (await session.scalars(select(DialJob).order_by(DialJob.id))).all()
        assert [j.variables for j in jobs] == [{"campaign": "spring-offer"}] * 2
        assert {j.status for j in jobs} == {"waiting"}
        assert {j.from_number for j in jobs} == {"+15559990000"}


async def test_everything_is_committed_when_202_is_answered(client, tenant, agent, app) -> None:
    numbers = [f"+1555777{i:04d}" for i in range(500)]
    response = await post_batch(client, tenant, {"agent_id": agent["id"], "to": numbers})
    assert response.status_code == 202
    # A new session on its own connection sees every row.
    async with app.state.sessionmaker() as session:
        for model in (Participant, DialJob):
            count = await session.scalar(select(func.count()).select_from(model))
            assert count == 500, model
        assert await session.scalar(select(func.count()).select_from(Call)) == 1
    stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
    assert stats == {"waiting": 500, "active": 0, "completed": 0, "failed": 0}


async def test_caller_id_resolution_order(client, tenant, agent) -> None:
    await register_number(client, tenant, "+15559990100")
    await register_number(client, tenant, "+15559990200")
    agent_b = (
        await client.post(
            "/v1/agents",
            json={"name": "B", "default_from_number": "+15559990200"},
            headers=tenant.headers,
        )
    ).json()
    body = {
        "agent_id": agent_b["id"],
        "recipients": [
            {"to": "+15559990001", "from_number": "+15559990100"},
            {"to": "+15559990002"},
        ],
    }
    response = await post_batch(client, tenant, body)
    assert response.status_code == 202, response.text
    call = (await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)).json()
    # recipient's own, then (no request number) the agent's default
    assert [p["from_number"] for p in call["participants"]] == ["+15559990100", "+15559990200"]

    plain = await post_batch(client, tenant, {"agent_id": agent["id"], "to": ["+15559990003"]})
    call = (await client.get(f"/v1/calls/{plain.json()['id']}", headers=tenant.headers)).json()
    assert call["participants"][0]["from_number"] == "+15559990000"  # the tenant default


async def test_post_call_override_merges_over_agent_default(client, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    agent = (
        await client.post(
            "/v1/agents",
            json={
                "name": "A",
                "post_call": {"summary": True, "extract": {"fields": ["a"], "lang": "en"}},
            },
            headers=tenant.headers,
        )
    ).json()
    body = {
        "agent_id": agent["id"],
        "to": ["+15559990001"],
        "post_call": {"extract": {"fields": ["b"]}, "webhook": "https://example.com/h"},
    }
    response = await post_batch(client, tenant, body)
    call = (await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)).json()
    assert call["post_call"] == {
        "summary": True,
        "extract": {"fields": ["b"], "lang": "en"},
        "webhook": "https://example.com/h",
    }


# --- errors, each as the seed's table names it -------------------------------------------


@pytest.mark.parametrize(
    ("body", "bad_locs"),
    [
        ({"to": ["+15559990001"]}, [["agent_id"]]),
        ({"agent_id": "not-a-uuid", "to": ["+15559990001"]}, [["agent_id"]]),
        ({"agent_id": "A"}, [[]]),
        ({"agent_id": "A", "to": []}, [["to"]]),
        ({"agent_id": "A", "recipients": []}, [["recipients"]]),
        ({"agent_id": "A", "to": ["+15559990001"], "recipients": [{"to": "+15559990002"}]}, [[]]),
        ({"agent_id": "A", "to": [f"+1555888{i:04d}" for i in range(501)]}, [["to"]]),
        (
            {"agent_id": "A", "to": ["+15559990001", "15559990002", "+1555", "hello"]},
            [["to", 1], ["to", 2], ["to", 3]],
        ),
        (
            {"agent_id": "A", "recipients": [{"to": "+15559990001"}, {"to": "+4412"}, {}]},
            [["recipients", 1, "to"], ["recipients", 2]],
        ),
        ({"agent_id": "A", "to": ["+15559990001"], "from_number": "nope"}, [["from_number"]]),
    ],
    ids=[
        "missing-agent",
        "bad-agent-uuid",
        "neither",
        "empty-to",
        "empty-recipients",
        "both",
        "over-500",
        "bad-e164",
        "bad-recipients",
        "bad-from",
    ],
)
async def test_validation_errors_list_every_bad_field(
    client, tenant, agent, app, body, bad_locs
) -> None:
    if body.get("agent_id") == "A":
        body = {**body, "agent_id": agent["id"]}
    response = await post_batch(client, tenant, body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    locs = [d["loc"] for d in response.json()["error"]["details"]]
    assert locs == bad_locs
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Call)) == 0


async def test_duplicate_recipient(client, tenant, agent) -> None:
    body = {"agent_id": agent["id"], "to": ["+15559990001", "+15559990002", "+15559990001"]}
    response = await post_batch(client, tenant, body)
    assert response.status_code == 400
    assert error_code(response) == "duplicate_recipient"
    assert [
        {k: d[k] for k in ("index", "identity", "first_index")}
        for d in response.json()["error"]["details"]
    ] == [{"index": 2, "identity": "+15559990001", "first_index": 0}]


async def test_missing_or_unknown_key_is_401(client, agent) -> None:
    body = with_agent(SEED_SIMPLE, agent)
    response = await client.post("/v1/calls/batch", json=body)
    assert response.status_code == 401
    assert error_code(response) == "missing_api_key"
    response = await client.post(
        "/v1/calls/batch", json=body, headers={"Authorization": "Bearer sb_secret_nope"}
    )
    assert response.status_code == 401
    assert error_code(response) == "invalid_api_key"


async def test_insufficient_credits_is_402_and_queues_nothing(client, make_tenant, app) -> None:
    poor = await make_tenant(credits=0.1)  # 0.1 credits; one increment at 0.1/min costs 0.05
    await register_number(client, poor, "+15559990000")
    agent = (
        await client.post(
            "/v1/agents", json={"name": "A", "rate_per_minute": 0.1}, headers=poor.headers
        )
    ).json()
    three = {"agent_id": agent["id"], "to": ["+15559990001", "+15559990002", "+15559990003"]}
    response = await post_batch(client, poor, three)
    assert response.status_code == 402
    assert error_code(response) == "insufficient_credits"
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Participant)) == 0
    two = {"agent_id": agent["id"], "to": ["+15559990001", "+15559990002"]}
    assert (await post_batch(client, poor, two)).status_code == 202
    balance = (await client.get("/v1/billing/balance", headers=poor.headers)).json()
    assert balance == {"balance": 0.1, "available": 0.0, "held": 0.1, "is_active": False}


async def test_publishable_key_cannot_batch(client, tenant, agent) -> None:
    created = await client.post(
        "/v1/keys",
        json={"type": "publishable", "label": "web", "agent_id": agent["id"]},
        headers=tenant.headers,
    )
    publishable = created.json()["key"]
    response = await client.post(
        "/v1/calls/batch",
        json=with_agent(SEED_SIMPLE, agent),
        headers={"Authorization": f"Bearer {publishable}"},
    )
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"


async def test_unknown_or_foreign_agent_is_404(client, tenant, agent, make_tenant) -> None:
    response = await post_batch(client, tenant, SEED_SIMPLE)  # the seed's agent id is not ours
    assert response.status_code == 404
    assert error_code(response) == "agent_not_found"
    other = await make_tenant()
    await register_number(client, other, "+15559990009")
    response = await post_batch(client, other, with_agent(SEED_SIMPLE, agent))
    assert response.status_code == 404
    assert error_code(response) == "agent_not_found"


async def test_dnc_hit_is_409_and_queues_nothing(client, tenant, agent, app) -> None:
    await client.post("/v1/dnc", json={"phone_number": "+15559990002"}, headers=tenant.headers)
    response = await post_batch(client, tenant, with_agent(SEED_SIMPLE, agent))
    assert response.status_code == 409
    assert error_code(response) == "dnc_blocked"
    assert response.json()["error"]["details"] == {"blocked": ["+15559990002"], "indexes": [1]}
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Call)) == 0
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["held"] == 0


async def test_from_number_not_owned_is_400(client, tenant, agent, make_tenant) -> None:
    other = await make_tenant()
    await register_number(client, other, "+15559990055")
    body = {**with_agent(SEED_SIMPLE, agent), "from_number": "+15559990055"}
    response = await post_batch(client, tenant, body)
    assert response.status_code == 400
    assert error_code(response) == "from_number_not_owned"


async def test_no_from_number_at_all_is_400(client, tenant) -> None:
    agent = (await client.post("/v1/agents", json={"name": "A"}, headers=tenant.headers)).json()
    response = await post_batch(client, tenant, {"agent_id": agent["id"], "to": ["+15559990001"]})
    assert response.status_code == 400
    assert error_code(response) == "no_from_number"


# --- idempotency ---------------------------------------------------------------------------


async def test_idempotent_replay_queues_nothing_new(client, tenant, agent) -> None:
    body = with_agent(SEED_RECIPIENTS, agent)
    first = await post_batch(client, tenant, body, **{"Idempotency-Key": "k1"})
    again = await post_batch(client, tenant, body, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
    assert stats["waiting"] == 2

    other = {**body, "batch_id": "another"}
    reused = await post_batch(client, tenant, other, **{"Idempotency-Key": "k1"})
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"


async def test_idempotency_keys_are_per_tenant(client, tenant, agent, make_tenant) -> None:
    body = with_agent(SEED_SIMPLE, agent)
    first = await post_batch(client, tenant, body, **{"Idempotency-Key": "same"})
    assert first.status_code == 202
    other = await make_tenant()
    response = await post_batch(client, other, body, **{"Idempotency-Key": "same"})
    assert response.status_code == 404  # evaluated afresh for the other tenant: not its agent


async def test_an_empty_or_overlong_idempotency_key_is_400_and_queues_nothing(
    client, tenant, agent
) -> None:
    body = with_agent(SEED_SIMPLE, agent)
    for key in ("", "k" * 256):
        response = await post_batch(client, tenant, body, **{"Idempotency-Key": key})
        assert response.status_code == 400, response.text
        assert error_code(response) == "validation_error"
        assert "Idempotency-Key" in response.json()["error"]["message"]
    stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
    assert stats["waiting"] == 0
    assert (
        await post_batch(client, tenant, body, **{"Idempotency-Key": "k" * 255})
    ).status_code == 202
