"""What a publishable key (it sits in a public web page) may do with POST /v1/calls: issue 10,
defect 6. One PSTN participant a request, only from its own or its agent's caller ID, with
the variables fixed on the key, and nothing else its owner did not choose."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from outdial.calls.models import Call
from outdial.dialer.models import DialJob
from tests.conftest import TenantHandle, create_agent, error_code, register_number

OTHER_CALLER_ID = "+15559990100"  # the tenant owns it, the key does not name it
KEY_CALLER_ID = "+15559990200"
AGENT_CALLER_ID = "+15559990300"


def pstn(identity: str, **fields: Any) -> dict[str, Any]:
    return {"transport": "pstn", "identity": identity, **fields}


def webrtc(identity: str) -> dict[str, Any]:
    return {"transport": "webrtc", "identity": identity}


async def publishable_key(
    client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str, **fields: Any
) -> dict[str, str]:
    body = {"type": "publishable", "agent_id": agent_id, **fields}
    response = await client.post("/v1/keys", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def call(
    client: httpx.AsyncClient, key: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/v1/calls", json=body, headers=key)


async def count(app: FastAPI, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


def refused_by(response: httpx.Response, rule: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert error_code(response) == "publishable_key_forbidden"
    details = response.json()["error"]["details"]
    assert details["rule"] == rule, details
    return details


@pytest.fixture
async def caller_ids(client, tenant, agent) -> None:
    for number in (OTHER_CALLER_ID, KEY_CALLER_ID, AGENT_CALLER_ID):
        await register_number(client, tenant, number)


async def test_the_issues_fanout_through_a_publishable_key_is_refused(
    client, tenant, agent, app
) -> None:
    """The reproduction: a publishable key with the default channels asked for 500 PSTN
    participants in one request, and got them queued."""
    key = await publishable_key(client, tenant, agent["id"])
    participants = [pstn(f"+1555{n:07d}") for n in range(500)]
    details = refused_by(
        await call(client, key, {"participants": participants}), "one_pstn_participant"
    )
    assert details["pstn_participants"] == 500
    refused_by(
        await call(client, key, {"participants": [pstn("+15559990001"), pstn("+15559990002")]}),
        "one_pstn_participant",
    )
    assert await count(app, Call) == 0
    # One PSTN participant, with any number of WebRTC ones, is fine.
    body = {"participants": [webrtc("a"), pstn("+15559990001"), webrtc("b")]}
    response = await call(client, key, body)
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 1


async def test_dialing_permissions_bind_publishable_keys_too(client, tenant, agent, app) -> None:
    key = await publishable_key(client, tenant, agent["id"])
    for number in ("+8823456789012", "+19005551234", "+449098790123"):
        response = await call(client, key, {"participants": [pstn(number)]})
        assert response.status_code == 403, response.text
        assert error_code(response) == "destination_not_permitted"
    assert await count(app, DialJob) == 0


async def test_a_caller_id_it_does_not_own_is_refused(
    client, tenant, agent, caller_ids, app
) -> None:
    """The reproduction: any of the tenant's caller IDs could be named, at the request's level
    or a participant's."""
    key = await publishable_key(client, tenant, agent["id"], default_from_number=KEY_CALLER_ID)
    for body in (
        {"from_number": OTHER_CALLER_ID, "participants": [pstn("+15559990001")]},
        {"participants": [pstn("+15559990001", from_number=OTHER_CALLER_ID)]},
        {"participants": [pstn("+15559990001", from_number="+15559990000")]},  # tenant default
    ):
        details = refused_by(await call(client, key, body), "from_number")
        assert details["allowed"] == [KEY_CALLER_ID]
    assert await count(app, Call) == 0

    response = await call(
        client, key, {"participants": [pstn("+15559990001", from_number=KEY_CALLER_ID)]}
    )
    assert response.status_code == 202, response.text


async def test_its_own_or_its_agents_caller_id(client, tenant, caller_ids) -> None:
    agent = await create_agent(client, tenant, default_from_number=AGENT_CALLER_ID)
    key = await publishable_key(client, tenant, agent["id"], default_from_number=KEY_CALLER_ID)
    used = []
    for from_number in (KEY_CALLER_ID, AGENT_CALLER_ID, None):
        body = {"participants": [pstn("+15559990001")]}
        if from_number:
            body["from_number"] = from_number
        response = await call(client, key, body)
        assert response.status_code == 202, response.text
        got = await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)
        used.append(got.json()["participants"][0]["from_number"])
    assert used == [KEY_CALLER_ID, AGENT_CALLER_ID, KEY_CALLER_ID]  # omitted: the key's first

    keyless = await publishable_key(client, tenant, agent["id"])
    details = refused_by(
        await call(
            client, keyless, {"from_number": KEY_CALLER_ID, "participants": [pstn("+15559990001")]}
        ),
        "from_number",
    )
    assert details == {
        "rule": "from_number",
        "from_numbers": [KEY_CALLER_ID],
        "allowed": [AGENT_CALLER_ID],
    }


async def test_neither_set_means_the_tenant_default_never_a_chosen_one(
    client, tenant, agent, caller_ids
) -> None:
    key = await publishable_key(client, tenant, agent["id"])
    response = await call(client, key, {"participants": [pstn("+15559990001")]})
    assert response.status_code == 202, response.text
    got = await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)
    assert got.json()["participants"][0]["from_number"] == "+15559990000"
    details = refused_by(
        await call(
            client, key, {"participants": [pstn("+15559990001", from_number="+15559990000")]}
        ),
        "from_number",
    )
    assert details["allowed"] == []


async def test_fixed_variables_are_carried_and_never_overridden(client, tenant, agent, app) -> None:
    fixed = {"campaign": "web-callback", "script": {"tone": "friendly"}}
    key = await publishable_key(client, tenant, agent["id"], variables=fixed)
    for body in (
        {"variables": {"campaign": "free-money"}, "participants": [pstn("+15559990001")]},
        {"variables": {"script": {}}, "participants": [pstn("+15559990001")]},
        {"participants": [pstn("+15559990001", metadata={"campaign": "free-money"})]},
        {"participants": [webrtc("v"), pstn("+15559990001")], "variables": {"x": 1, "script": 2}},
    ):
        details = refused_by(await call(client, key, body), "variables")
        assert details["variables"] in (["campaign"], ["script"])
    assert await count(app, Call) == 0

    body = {
        "variables": {"visitor": "Ann"},
        "participants": [pstn("+15559990001", metadata={"page": "/"})],
    }
    response = await call(client, key, body)
    assert response.status_code == 202, response.text
    got = await client.get(f"/v1/calls/{response.json()['id']}", headers=tenant.headers)
    assert got.json()["variables"] == {"visitor": "Ann", **fixed}
    async with app.state.sessionmaker() as session:
        jobs = (await session.scalars(select(DialJob.variables))).all()
    assert jobs == [{"visitor": "Ann", **fixed}]  # what the dialer hands the agent


async def test_a_key_without_fixed_variables_takes_the_requests(client, tenant, agent) -> None:
    key = await publishable_key(client, tenant, agent["id"])
    body = {"variables": {"campaign": "x"}, "participants": [pstn("+15559990001")]}
    response = await call(client, key, body)
    assert response.status_code == 202, response.text
    listed = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
    assert {k["type"]: k["variables"] for k in listed} == {"secret": None, "publishable": {}}


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({"retry": {"max_attempts": 10}}, ["retry"]),
        ({"post_call": {"summary": True}}, ["post_call"]),
        ({"retry": {}, "post_call": {}}, ["post_call", "retry"]),
    ],
)
async def test_no_retries_or_post_call_settings_of_its_own(
    client, tenant, agent, app, extra, fields
) -> None:
    key = await publishable_key(client, tenant, agent["id"])
    body = {"participants": [pstn("+15559990001")], **extra}
    assert refused_by(await call(client, key, body), "options")["fields"] == fields
    assert await count(app, Call) == 0


async def test_secret_keys_are_not_bound_by_these_rules(client, tenant, agent, caller_ids) -> None:
    body = {
        "agent_id": agent["id"],
        "from_number": OTHER_CALLER_ID,
        "participants": [pstn("+15559990001"), pstn("+15559990002")],
        "retry": {"max_attempts": 2},
        "variables": {"campaign": "x"},
    }
    response = await client.post("/v1/calls", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 2
