"""POST /v1/calls: the seed's "Direct Participant Fanout", mixed and WebRTC-only rooms, and
what publishable keys may do with it."""

from typing import Any

import httpx
import jwt
import pytest
from livekit.api import TokenVerifier
from sqlalchemy import select

from outdial.billing.service import add_credits, to_micros
from outdial.calls.models import Call, Participant
from outdial.dialer.models import DialJob
from tests.calls.conftest import balance, count_rows, queue_stats
from tests.conftest import TenantHandle, create_agent, error_code, register_number

pytestmark = pytest.mark.one_backend

SEED_DIRECT = {
    "agent_id": "550e8400-e29b-41d4-a716-446655440000",
    "participants": [
        {
            "transport": "pstn",
            "identity": "+15559990001",
            "from_number": "+15559990000",
            "metadata": {"name": "Alice", "plan": "Gold"},
        },
        {
            "transport": "pstn",
            "identity": "+15559990002",
            "from_number": "+15559990000",
            "metadata": {"name": "Bob", "plan": "Silver"},
        },
    ],
    "variables": {"campaign": "spring-offer"},
}

QUEUED_KEYS = {"id", "room_name", "status", "batch_id", "queued", "participants"}
PSTN_KEYS = {"id", "transport", "identity", "status", "telephony_leg_id", "job_id"}
WEBRTC_KEYS = PSTN_KEYS | {"url", "token"}


def pstn(identity: str, **fields: Any) -> dict[str, Any]:
    return {"transport": "pstn", "identity": identity, **fields}


def webrtc(identity: str, **fields: Any) -> dict[str, Any]:
    return {"transport": "webrtc", "identity": identity, **fields}


async def post_call(
    client: httpx.AsyncClient, key: TenantHandle, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post("/v1/calls", json=body, headers={**key.headers, **headers})


def verify_token(app: Any, token: str) -> Any:
    settings = app.state.settings
    return TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret).verify(token)


async def test_seed_direct_fanout(client, tenant, agent, app) -> None:
    response = await post_call(client, tenant, {**SEED_DIRECT, "agent_id": agent["id"]})
    assert response.status_code == 202, response.text
    body = response.json()
    # The batch's response shape, field for field.
    assert set(body) == QUEUED_KEYS
    assert body["id"].startswith("call_")
    assert body["room_name"] == "call_" + body["id"]
    assert body["status"] == "queued"
    assert body["batch_id"] is None
    assert body["queued"] == 2
    assert [p["identity"] for p in body["participants"]] == ["+15559990001", "+15559990002"]
    for p in body["participants"]:
        assert set(p) == PSTN_KEYS
        assert p["id"].startswith("participant_")
        assert p["transport"] == "pstn"
        assert p["status"] == "queued"
        assert p["telephony_leg_id"].startswith("leg_")
        assert p["job_id"].startswith("job_")

    call = (await client.get(f"/v1/calls/{body['id']}", headers=tenant.headers)).json()
    assert call["kind"] == "direct"
    assert call["agent_id"] == agent["id"]
    assert call["variables"] == {"campaign": "spring-offer"}
    assert [p["metadata"] for p in call["participants"]] == [
        {"name": "Alice", "plan": "Gold"},
        {"name": "Bob", "plan": "Silver"},
    ]
    assert [p["from_number"] for p in call["participants"]] == ["+15559990000"] * 2

    async with app.state.sessionmaker() as session:
        jobs = {j.id: j for j in (await session.scalars(select(DialJob))).all()}
    assert [jobs[p["job_id"]].to_number for p in body["participants"]] == [
        "+15559990001",
        "+15559990002",
    ]
    assert {j.status for j in jobs.values()} == {"waiting"}
    assert [j.variables for j in jobs.values()] == [{"campaign": "spring-offer"}] * 2
    assert await queue_stats(client, tenant) == {
        "waiting": 2,
        "active": 0,
        "completed": 0,
        "failed": 0,
    }


async def test_mixed_pstn_and_webrtc(client, tenant, app) -> None:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=0.2)
    body = {
        "agent_id": agent["id"],
        "participants": [
            webrtc("operator-7", name="Olivia"),
            pstn("+15559990001"),
            webrtc("supervisor"),
        ],
    }
    response = await post_call(client, tenant, body)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert set(queued) == QUEUED_KEYS
    assert queued["status"] == "queued"
    assert queued["queued"] == 1  # only the PSTN participant is queued for dialing
    first, phone, second = queued["participants"]
    assert set(phone) == PSTN_KEYS  # no url / token keys at all, not even null
    assert phone["job_id"].startswith("job_")
    for p, identity, name in ((first, "operator-7", "Olivia"), (second, "supervisor", "")):
        assert set(p) == WEBRTC_KEYS
        assert p["transport"] == "webrtc"
        assert p["identity"] == identity
        assert p["telephony_leg_id"] is None
        assert p["job_id"] is None
        assert p["url"] == app.state.settings.livekit_url
        claims = verify_token(app, p["token"])
        assert claims.identity == identity
        assert claims.name == name
        assert claims.video.room_join is True
        assert claims.video.room == "call_" + queued["id"] == queued["room_name"]

    # A token signed with another secret is refused, so the check above proves the signature.
    forger = TokenVerifier(app.state.settings.livekit_api_key, "not-the-secret-" * 4)
    with pytest.raises(jwt.InvalidSignatureError):
        forger.verify(first["token"])

    assert (await queue_stats(client, tenant))["waiting"] == 1
    # Only the PSTN participant holds credit: one 30-second increment at 0.2/min.
    assert (await balance(client, tenant))["held"] == 0.1


async def test_all_webrtc_is_201_and_queues_nothing(client, tenant, agent, app) -> None:
    batch = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990001"]},
        headers=tenant.headers,
    )
    assert batch.status_code == 202
    stats_before = await queue_stats(client, tenant)
    balance_before = await balance(client, tenant)
    assert stats_before["waiting"] == 1

    body = {"agent_id": agent["id"], "participants": [webrtc("alice"), webrtc("bob")]}
    response = await post_call(client, tenant, body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == QUEUED_KEYS
    assert created["queued"] == 0
    assert [p["identity"] for p in created["participants"]] == ["alice", "bob"]
    for p in created["participants"]:
        assert set(p) == WEBRTC_KEYS
        claims = verify_token(app, p["token"])
        assert claims.identity == p["identity"]
        assert claims.video.room == created["room_name"]

    assert await queue_stats(client, tenant) == stats_before
    assert await balance(client, tenant) == balance_before
    assert await count_rows(app, DialJob, DialJob.call_id == created["id"]) == 0
    assert await count_rows(app, Participant, Participant.call_id == created["id"]) == 2
    call = (await client.get(f"/v1/calls/{created['id']}", headers=tenant.headers)).json()
    assert call["status"] == created["status"] != "queued"
    assert [p["transport"] for p in call["participants"]] == ["webrtc", "webrtc"]


# --- publishable keys --------------------------------------------------------------------


async def test_publishable_key_calls_for_its_own_agent(
    client, tenant, agent, make_publishable, app
) -> None:
    key = await make_publishable(tenant, agent["id"], channels=["web", "phone"])
    omitted = {"participants": [pstn("+15559990001")]}
    response = await post_call(client, key, omitted)
    assert response.status_code == 202, response.text
    call = (await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)).json()
    assert call["agent_id"] == agent["id"]

    same = {"agent_id": agent["id"], "participants": [webrtc("visitor-1")]}
    response = await post_call(client, key, same)
    assert response.status_code == 201, response.text
    claims = verify_token(app, response.json()["participants"][0]["token"])
    assert claims.identity == "visitor-1"


async def test_publishable_key_cannot_call_for_another_agent(
    client, tenant, agent, make_publishable, app
) -> None:
    other_agent = await create_agent(client, tenant, name="Other")
    key = await make_publishable(tenant, agent["id"])
    body = {"agent_id": other_agent["id"], "participants": [webrtc("visitor-1")]}
    response = await post_call(client, key, body)
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"
    assert await count_rows(app, Call) == 0


@pytest.mark.parametrize(
    ("channels", "allowed", "refused"),
    [(["web"], "webrtc", "pstn"), (["phone"], "pstn", "webrtc")],
)
async def test_publishable_key_is_bound_to_its_channels(
    client, tenant, agent, make_publishable, app, channels, allowed, refused
) -> None:
    key = await make_publishable(tenant, agent["id"], channels=channels)
    participant = {"pstn": pstn("+15559990001"), "webrtc": webrtc("visitor-1")}

    response = await post_call(client, key, {"participants": [participant[refused]]})
    assert response.status_code == 403, response.text
    assert error_code(response) == "publishable_key_forbidden"
    # One refused participant among allowed ones refuses the whole request.
    mixed = {"participants": [participant[allowed], participant[refused]]}
    response = await post_call(client, key, mixed)
    assert response.status_code == 403
    assert error_code(response) == "publishable_key_forbidden"
    assert await count_rows(app, Call) == 0

    response = await post_call(client, key, {"participants": [participant[allowed]]})
    assert response.status_code == (202 if allowed == "pstn" else 201), response.text


async def test_publishable_key_default_from_number(client, tenant, agent, make_publishable) -> None:
    await register_number(client, tenant, "+15559990100")
    key = await make_publishable(tenant, agent["id"], default_from_number="+15559990100")
    response = await post_call(client, key, {"participants": [pstn("+15559990001")]})
    assert response.status_code == 202, response.text
    call = (await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)).json()
    assert call["participants"][0]["from_number"] == "+15559990100"  # not the tenant default


async def test_publishable_key_cannot_read_calls(client, tenant, agent, make_publishable) -> None:
    key = await make_publishable(tenant, agent["id"])
    created = await post_call(client, key, {"participants": [pstn("+15559990001")]})
    assert created.status_code == 202
    for path in (f"/v1/calls/{created.json()['id']}", "/v1/calls", "/v1/calls/queue/stats"):
        response = await client.get(path, headers=key.headers)
        assert response.status_code == 403, path
        assert error_code(response) == "publishable_key_forbidden"
    response = await client.post(f"/v1/calls/{created.json()['id']}/end", headers=key.headers)
    assert response.status_code == 403


# --- errors ------------------------------------------------------------------------------


async def test_secret_key_needs_agent_id(client, tenant, agent, app) -> None:
    response = await post_call(client, tenant, {"participants": [pstn("+15559990001")]})
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert [d["loc"] for d in response.json()["error"]["details"]] == [["agent_id"]]
    assert await count_rows(app, Call) == 0


async def test_bad_pstn_identities_are_listed_with_their_index(client, tenant, agent, app) -> None:
    body = {
        "agent_id": agent["id"],
        "participants": [
            pstn("+15559990001"),
            pstn("hello"),
            webrtc("hello"),  # any identity will do for WebRTC
            pstn("+1555"),
            {"transport": "sip", "identity": "+15559990003"},
        ],
    }
    response = await post_call(client, tenant, body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    details = response.json()["error"]["details"]
    assert [d["loc"] for d in details] == [
        ["participants", 1, "identity"],
        ["participants", 3, "identity"],
        ["participants", 4, "transport"],
    ]
    assert "'hello'" in details[0]["message"]
    assert await count_rows(app, Call) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"participants": []},
        {"participants": [webrtc("a", from_number="+15559990000")]},
        {"participants": [pstn("+15559990001")], "to": ["+15559990002"]},
        {"participants": [pstn(f"+1555888{i:04d}") for i in range(501)]},
    ],
    ids=["empty", "from-on-webrtc", "unknown-field", "over-500"],
)
async def test_malformed_requests_are_400(client, tenant, agent, body) -> None:
    response = await post_call(client, tenant, {"agent_id": agent["id"], **body})
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"


async def test_duplicate_participants(client, tenant, agent) -> None:
    body = {
        "agent_id": agent["id"],
        "participants": [
            pstn("+15559990001"),
            webrtc("+15559990001"),  # a browser user may be named anything: no clash
            pstn("+15559990001"),
            webrtc("bob"),
            webrtc("bob"),
        ],
    }
    response = await post_call(client, tenant, body)
    assert response.status_code == 400
    assert error_code(response) == "duplicate_recipient"
    assert [
        {k: d[k] for k in ("index", "identity", "first_index")}
        for d in response.json()["error"]["details"]
    ] == [
        {"index": 2, "identity": "+15559990001", "first_index": 0},
        {"index": 4, "identity": "bob", "first_index": 3},
    ]


async def test_insufficient_credits_is_402(client, make_tenant, app) -> None:
    poor = await make_tenant(credits=0.1)
    await register_number(client, poor, "+15559990000")
    agent = await create_agent(client, poor, rate_per_minute=0.1)  # 0.05 per increment
    three = [pstn("+15559990001"), pstn("+15559990002"), pstn("+15559990003")]
    response = await post_call(client, poor, {"agent_id": agent["id"], "participants": three})
    assert response.status_code == 402
    assert error_code(response) == "insufficient_credits"
    assert response.json()["error"]["details"] == {"required": 0.15, "available": 0.1}
    assert await count_rows(app, Participant) == 0
    assert (await balance(client, poor))["held"] == 0
    # WebRTC participants hold nothing, so a WebRTC-only room needs no credit.
    webrtc_only = {"agent_id": agent["id"], "participants": [webrtc("a")]}
    assert (await post_call(client, poor, webrtc_only)).status_code == 201


async def test_unknown_or_foreign_agent_is_404(client, tenant, agent, make_tenant) -> None:
    response = await post_call(client, tenant, SEED_DIRECT)  # the seed's agent is not ours
    assert response.status_code == 404
    assert error_code(response) == "agent_not_found"
    other = await make_tenant()
    await register_number(client, other, "+15559990009")
    response = await post_call(client, other, {**SEED_DIRECT, "agent_id": agent["id"]})
    assert response.status_code == 404
    assert error_code(response) == "agent_not_found"


async def test_dnc_hit_is_409_and_queues_nothing(client, tenant, agent, app) -> None:
    dnc = await client.post(
        "/v1/dnc", json={"phone_number": "+15559990002"}, headers=tenant.headers
    )
    assert dnc.status_code in (200, 201)
    body = {
        "agent_id": agent["id"],
        "participants": [
            webrtc("+15559990002"),  # a browser user named like the number is not dialed
            pstn("+15559990001"),
            pstn("+15559990002"),
        ],
    }
    response = await post_call(client, tenant, body)
    assert response.status_code == 409
    assert error_code(response) == "dnc_blocked"
    assert response.json()["error"]["details"] == {"blocked": ["+15559990002"], "indexes": [2]}
    assert await count_rows(app, Call) == 0
    assert (await balance(client, tenant))["held"] == 0
    # WebRTC participants are never dialed, so the DNC list does not concern them.
    webrtc_only = {"agent_id": agent["id"], "participants": [webrtc("+15559990002")]}
    assert (await post_call(client, tenant, webrtc_only)).status_code == 201


async def test_from_number_not_owned_is_400(client, tenant, agent, make_tenant) -> None:
    other = await make_tenant()
    await register_number(client, other, "+15559990055")
    body = {
        "agent_id": agent["id"],
        "participants": [pstn("+15559990001"), pstn("+15559990002", from_number="+15559990055")],
    }
    response = await post_call(client, tenant, body)
    assert response.status_code == 400
    assert error_code(response) == "from_number_not_owned"
    assert response.json()["error"]["details"] == {"from_numbers": ["+15559990055"]}


# --- idempotency -------------------------------------------------------------------------


async def test_idempotent_replay_queues_nothing_new(client, tenant, agent, app) -> None:
    body = {**SEED_DIRECT, "agent_id": agent["id"]}
    first = await post_call(client, tenant, body, **{"Idempotency-Key": "direct-1"})
    again = await post_call(client, tenant, body, **{"Idempotency-Key": "direct-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count_rows(app, Call) == 1
    assert (await queue_stats(client, tenant))["waiting"] == 2
    assert (await balance(client, tenant))["held"] == 0.1  # two increments at 0.1/min, once

    changed = {**body, "variables": {"campaign": "other"}}
    reused = await post_call(client, tenant, changed, **{"Idempotency-Key": "direct-1"})
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    # The same key on another endpoint is another request, not a replay.
    batch = {"agent_id": agent["id"], "to": ["+15559990003"]}
    elsewhere = await client.post(
        "/v1/calls/batch", json=batch, headers={**tenant.headers, "Idempotency-Key": "direct-1"}
    )
    assert elsewhere.status_code == 422
    assert await count_rows(app, Call) == 1


async def test_idempotent_replay_of_a_webrtc_room_is_201(client, tenant, agent, app) -> None:
    body = {"agent_id": agent["id"], "participants": [webrtc("alice")]}
    first = await post_call(client, tenant, body, **{"Idempotency-Key": "room-1"})
    again = await post_call(client, tenant, body, **{"Idempotency-Key": "room-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the same room and the same token
    assert await count_rows(app, Call) == 1


async def test_failed_request_does_not_burn_its_idempotency_key(client, make_tenant, app) -> None:
    poor = await make_tenant(credits=0.05)
    await register_number(client, poor, "+15559990000")
    agent = await create_agent(client, poor, rate_per_minute=0.1)
    body = {"agent_id": agent["id"], "participants": [pstn("+15559990001"), pstn("+15559990002")]}
    first = await post_call(client, poor, body, **{"Idempotency-Key": "retry-me"})
    assert first.status_code == 402
    async with app.state.sessionmaker() as session, session.begin():
        await add_credits(session, tenant_id=poor.id, amount_micros=to_micros(1))
    retried = await post_call(client, poor, body, **{"Idempotency-Key": "retry-me"})
    assert retried.status_code == 202, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert await count_rows(app, Call) == 1
