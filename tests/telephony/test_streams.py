"""`dialer/streams.py`: which dials carry a stream and what their agent is told, read from the
database (both backends) for calls queued through the API."""

import json
from typing import Any

from sqlalchemy import select

from outdial.calls.models import Call, Participant
from outdial.dialer.streams import stream_target_of_attempt, stream_targets
from outdial.telephony.base import StreamTarget
from tests.conftest import create_agent, register_number

STREAM_URL = "wss://agent.example.com/stream?x=1"


async def participants_of(app, call_id: str) -> dict[str, Participant]:
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(select(Participant).where(Participant.call_id == call_id))
        return {p.identity: p for p in rows}


async def queue(client, tenant, body: dict[str, Any]) -> str:
    response = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def test_a_batch_with_a_streaming_agent(client, app, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    await register_number(client, tenant, "+15559990009")
    agent = await create_agent(client, tenant, stream_url=STREAM_URL)
    call_id = await queue(
        client,
        tenant,
        {
            "agent_id": agent["id"],
            "batch_id": "spring-promo",
            "variables": {"greeting": "hi", "plan": "basic", "n": 3},
            "recipients": [
                {"to": "+15551110001", "metadata": {"plan": "gold", "name": "Ann"}},
                {"to": "+15551110002", "from_number": "+15559990009"},
            ],
        },
    )
    ann, bob = (await participants_of(app, call_id)).values()
    async with app.state.sessionmaker() as session:
        targets = await stream_targets(session, attempts={"att_1": ann.id, "att_2": bob.id})
        one = await stream_target_of_attempt(session, attempt_id="att_unknown")
    assert one is None
    secret = targets["att_1"].secret
    assert secret.startswith("whsec_") and secret[-4:] == agent["stream_secret"][-4:]
    assert targets["att_1"] == StreamTarget(
        url=STREAM_URL,
        secret=agent["stream_secret"],
        call_id=call_id,
        participant_id=ann.id,
        attempt_id="att_1",
        agent_id=agent["id"],
        to="+15551110001",
        from_number="+15559990000",
        campaign_id=None,
        batch_id="spring-promo",
        # the call's variables, the recipient's metadata winning where both name a key
        variables={"greeting": "hi", "plan": "gold", "n": 3, "name": "Ann"},
    )
    assert targets["att_2"].from_number == "+15559990009"
    assert targets["att_2"].variables == {"greeting": "hi", "plan": "basic", "n": 3}
    parameters = targets["att_2"].custom_parameters("human")
    # one JSON string (PostgreSQL's JSONB keeps its own key order)
    assert json.loads(parameters.pop("variables")) == {"greeting": "hi", "plan": "basic", "n": 3}
    assert parameters == {
        "call_id": call_id,
        "participant_id": bob.id,
        "attempt_id": "att_2",
        "agent_id": agent["id"],
        "to": "+15551110002",
        "from": "+15559990009",
        "answered_by": "human",
        "batch_id": "spring-promo",
    }


async def test_agents_without_a_stream_url_get_none(client, app, tenant) -> None:
    await register_number(client, tenant, "+15559990000")
    silent = await create_agent(client, tenant)
    streaming = await create_agent(client, tenant, stream_url=STREAM_URL)
    without = await queue(client, tenant, {"agent_id": silent["id"], "to": ["+15551110001"]})
    with_ = await queue(client, tenant, {"agent_id": streaming["id"], "to": ["+15551110002"]})
    [p1] = (await participants_of(app, without)).values()
    [p2] = (await participants_of(app, with_)).values()
    async with app.state.sessionmaker() as session:
        targets = await stream_targets(session, attempts={"a1": p1.id, "a2": p2.id, "a3": "nope"})
        assert await stream_targets(session, attempts={}) == {}
    assert set(targets) == {"a2"}
    assert targets["a2"].variables == {}
    assert targets["a2"].batch_id.startswith("batch_")  # one is made when none is given


async def test_a_campaign_call_carries_its_contacts_variables(client, app, tenant) -> None:
    """A campaign call stores its contact's variables as the call's: they reach the agent."""
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, stream_url=STREAM_URL)
    call_id = await queue(client, tenant, {"agent_id": agent["id"], "to": ["+15551110003"]})
    async with app.state.sessionmaker() as session, session.begin():
        call = await session.get(Call, call_id)
        assert call is not None
        call.campaign_id, call.kind = "cmp_123", "campaign"
        call.variables = {"first_name": "Cy", "balance": "12.50"}
    [participant] = (await participants_of(app, call_id)).values()
    async with app.state.sessionmaker() as session:
        [target] = (await stream_targets(session, attempts={"a": participant.id})).values()
    assert target.campaign_id == "cmp_123"
    assert target.variables == {"first_name": "Cy", "balance": "12.50"}
    assert target.custom_parameters("machine")["campaign_id"] == "cmp_123"
    assert target.custom_parameters("machine")["answered_by"] == "machine"
