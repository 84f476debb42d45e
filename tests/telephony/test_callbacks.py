"""The carriers' callback endpoints through the real ASGI app, on SQLite and PostgreSQL, and
each carrier end to end: a batch queued through the API, dialed by a running dialer through a
LOCAL FAKE carrier (tests/telephony/fakes.py, never the real service), its callbacks signed
with the carrier's own algorithm (official SDKs) and posted → participants end right."""

import json
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from outdial.app import create_app
from outdial.config import Settings
from outdial.dialer.models import DialAttempt
from outdial.telephony import twilio
from tests.conftest import create_agent, error_code, register_number
from tests.dialer.conftest import wait_until
from tests.telephony.conftest import (
    dialer_through,
    plivo_signature,
    post_plivo,
    post_twilio,
    twilio_signature,
)
from tests.telephony.fakes import FakePlivo, plivo_xml_problems, twiml_problems

NUMBERS = {"human": "+15559990001", "busy": "+15559990002", "machine": "+15559990003"}


async def queue_batch(client, tenant, agent, numbers) -> str:
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": list(numbers), "ring_timeout_seconds": 20},
        headers=tenant.headers,
    )
    assert queued.status_code == 202, queued.text
    return queued.json()["id"]


async def participants(client, tenant, call_id) -> dict[str, dict[str, Any]]:
    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    return {p["identity"]: p for p in call["participants"]}


async def all_final(client, tenant, call_id) -> bool:
    found = await participants(client, tenant, call_id)
    return all(p["status"] in ("completed", "failed", "canceled") for p in found.values())


# --- Plivo ----------------------------------------------------------------------------------------


async def test_plivo_end_to_end(client, app, database_url, tenant, agent, fake_plivo) -> None:
    call_id = await queue_batch(client, tenant, agent, NUMBERS.values())
    async with dialer_through(app, database_url, "plivo", fake_plivo.url) as dialer:
        await wait_until(lambda: _count(fake_plivo, 3))
        made = {r.body["to"]: r.body for r in fake_plivo.of("POST", "/Call/")}
        assert fake_plivo.problems == []
        human, busy, machine = (made[n.removeprefix("+")] for n in NUMBERS.values())

        for body, uuid in ((human, "cu-human"), (machine, "cu-machine")):
            ring = await post_plivo(
                client, body["ring_url"], {"CallUUID": uuid, "CallStatus": "ringing"}
            )
            assert ring.status_code == 204, ring.text
        answer = await post_plivo(
            client, human["answer_url"], {"CallUUID": "cu-human", "CallStatus": "in-progress"}
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/xml"
        assert "<Wait" in answer.text
        by_machine = await post_plivo(
            client, machine["answer_url"], {"CallUUID": "cu-machine", "Machine": "true"}
        )
        assert "<Hangup/>" in by_machine.text  # the agent's voicemail_behavior is hangup
        found = await participants(client, tenant, call_id)
        assert found[NUMBERS["human"]]["status"] == "in_progress"

        ended = {
            "human": (
                human,
                {
                    "CallUUID": "cu-human",
                    "CallStatus": "completed",
                    "Duration": "42",
                    "HangupCause": "NORMAL_CLEARING",
                },
            ),
            "busy": (busy, {"CallStatus": "busy", "HangupCause": "USER_BUSY", "Duration": "0"}),
            # Plivo's hangup callback does not repeat Machine: the answer told us.
            "machine": (
                machine,
                {"CallUUID": "cu-machine", "CallStatus": "completed", "Duration": "7"},
            ),
        }
        for body, params in ended.values():
            response = await post_plivo(client, body["hangup_url"], params)
            assert response.status_code == 204, response.text
        await wait_until(lambda: all_final(client, tenant, call_id))
        # The ends were written by the API: the dialer lets go of those calls by itself.
        await wait_until(lambda: _no_live_calls(dialer), within=5)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "shutdown waited for calls that had ended"

    found = await participants(client, tenant, call_id)
    outcome = {
        n: (p["status"], p["end_reason"], p["duration_seconds"], p["cost"])
        for n, p in found.items()
    }
    # rate 0.1 a minute, billed per started 30 s: 42 s → 2 increments of 0.05; 7 s → 1
    assert outcome == {
        NUMBERS["human"]: ("completed", "answered", 42, 0.1),
        NUMBERS["busy"]: ("failed", "busy", None, 0),
        NUMBERS["machine"]: ("completed", "voicemail", 7, 0.05),
    }
    async with app.state.sessionmaker() as session:
        stored = {
            a.to_number: a
            for a in await session.scalars(
                select(DialAttempt).where(DialAttempt.call_id == call_id)
            )
        }
    assert stored[NUMBERS["human"]].provider_call_id == "cu-human"
    assert stored[NUMBERS["machine"]].answered_by == "machine"
    assert stored[NUMBERS["busy"]].provider_call_id in fake_plivo.state  # its request uuid


async def test_a_machine_answered_call_settled_by_reconciliation_ends_voicemail(
    client, app, database_url, tenant, agent, fake_plivo
) -> None:
    """The answer said a machine picked up; its hangup callback never came (the end is
    learnt by asking Plivo, whose records never say who answered): voicemail, not answered."""
    call_id = await queue_batch(client, tenant, agent, [NUMBERS["machine"]])
    async with dialer_through(app, database_url, "plivo", fake_plivo.url) as dialer:
        await wait_until(lambda: _count(fake_plivo, 1))
        [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
        await post_plivo(client, body["answer_url"], {"CallUUID": "cu-vm", "Machine": "true"})
        fake_plivo.records["cu-vm"] = {"answer_time": "2026-11-30 10:00:03", "call_duration": 21}
        async with app.state.sessionmaker() as session:
            attempt = await session.scalar(
                select(DialAttempt).where(DialAttempt.call_id == call_id)
            )
        assert attempt.answered_by == "machine"
        await dialer.reconciler.reconcile([attempt.id])
        found = await participants(client, tenant, call_id)
    p = found[NUMBERS["machine"]]
    assert (p["status"], p["end_reason"], p["duration_seconds"]) == ("completed", "voicemail", 21)


async def test_plivo_hang_up_asked_through_the_api_reaches_plivo(
    client, app, database_url, tenant, agent, fake_plivo
) -> None:
    call_id = await queue_batch(client, tenant, agent, [NUMBERS["human"]])
    async with dialer_through(app, database_url, "plivo", fake_plivo.url):
        await wait_until(lambda: _count(fake_plivo, 1))
        [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
        fake_plivo.state["cu-1"] = "live"
        await post_plivo(
            client, body["answer_url"], {"CallUUID": "cu-1", "CallStatus": "in-progress"}
        )
        ended = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
        assert ended.status_code == 200, ended.text
        # The dialer hangs up by the id Plivo gave the connected call.
        await wait_until(lambda: _state_is(fake_plivo, "cu-1", "ended"), within=10)
        await post_plivo(
            client,
            body["hangup_url"],
            {"CallUUID": "cu-1", "CallStatus": "completed", "Duration": "3"},
        )
        await wait_until(lambda: all_final(client, tenant, call_id))
    assert fake_plivo.problems == []


# A forgery is refused before any storage is touched: the API's shape, one backend.
@pytest.mark.one_backend
@pytest.mark.parametrize("forgery", ["unsigned", "wrong_token", "tampered", "other_attempt"])
async def test_forged_plivo_callbacks_are_403_and_change_nothing(
    client, app, database_url, tenant, agent, fake_plivo, forgery
) -> None:
    call_id = await queue_batch(client, tenant, agent, [NUMBERS["human"]])
    async with dialer_through(app, database_url, "plivo", fake_plivo.url):
        await wait_until(lambda: _count(fake_plivo, 1))
        [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
        await _forge_plivo(client, tenant, call_id, body, forgery)
        # the real hang-up still counts
        real = {"CallUUID": "cu-1", "CallStatus": "busy", "HangupCause": "USER_BUSY"}
        assert (await post_plivo(client, body["hangup_url"], real)).status_code == 204
        await wait_until(lambda: all_final(client, tenant, call_id))


async def _forge_plivo(client, tenant, call_id, body, forgery) -> None:
    before = await participants(client, tenant, call_id)
    params = {"CallUUID": "cu-1", "CallStatus": "completed", "Duration": "600"}
    url = body["hangup_url"]
    if forgery == "unsigned":
        response = await post_plivo(client, url, params, headers={})
    elif forgery == "wrong_token":
        response = await post_plivo(client, url, params, token="guessed-token")
    elif forgery == "tampered":
        nonce_sig = _plivo_headers_for(url, {**params, "Duration": "1"})
        response = await post_plivo(client, url, params, headers=nonce_sig)
    else:  # a real signature, replayed against another attempt's URL
        signed = _plivo_headers_for(url, params)
        response = await client.post(
            "/v1/telephony/plivo/hangup?attempt=att_someone_else", data=params, headers=signed
        )
    assert response.status_code == 403, response.text
    assert error_code(response) == "invalid_signature"
    assert await participants(client, tenant, call_id) == before
    assert before[NUMBERS["human"]]["status"] == "dialing"


async def test_repeated_plivo_hangup_changes_nothing(
    client, app, database_url, tenant, agent, fake_plivo
) -> None:
    call_id = await queue_batch(client, tenant, agent, [NUMBERS["human"]])
    async with dialer_through(app, database_url, "plivo", fake_plivo.url):
        await wait_until(lambda: _count(fake_plivo, 1))
        [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
        await _answer_and_hang_up_twice(client, tenant, call_id, body)


async def _answer_and_hang_up_twice(client, tenant, call_id, body) -> None:
    await post_plivo(client, body["answer_url"], {"CallUUID": "cu-1"})
    params = {"CallUUID": "cu-1", "CallStatus": "completed", "Duration": "31"}
    assert (await post_plivo(client, body["hangup_url"], params)).status_code == 204
    first = await participants(client, tenant, call_id)
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert (
        await post_plivo(client, body["hangup_url"], {**params, "Duration": "90"})
    ).status_code == 204
    assert await participants(client, tenant, call_id) == first
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).json() == balance
    assert first[NUMBERS["human"]]["duration_seconds"] == 31


async def test_a_signed_callback_naming_no_attempt_is_400(client) -> None:
    url = "https://outdial.example.com/v1/telephony/plivo/hangup"
    response = await post_plivo(client, url, {"CallStatus": "busy"})
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


# --- Twilio ---------------------------------------------------------------------------------------


async def test_twilio_end_to_end(client, app, database_url, tenant, agent, fake_twilio) -> None:
    call_id = await queue_batch(client, tenant, agent, NUMBERS.values())
    async with dialer_through(app, database_url, "twilio", fake_twilio.url) as dialer:
        await wait_until(lambda: _count(fake_twilio, 3))
        assert fake_twilio.problems == []
        made = {dict(r.body)["To"]: dict(r.body) for r in fake_twilio.of("POST", "/Calls.json")}
        human, busy, machine = (made[n] for n in NUMBERS.values())

        for form in (human, busy, machine):
            for status in ("initiated", "ringing"):
                response = await post_twilio(client, form["StatusCallback"], {"CallStatus": status})
                assert response.status_code == 204, response.text
        assert (
            await post_twilio(client, human["StatusCallback"], {"CallStatus": "in-progress"})
        ).status_code == 204
        twiml = await post_twilio(client, machine["Url"], {"AnsweredBy": "machine_start"})
        assert twiml.status_code == 200 and "<Hangup/>" in twiml.text
        found = await participants(client, tenant, call_id)
        assert found[NUMBERS["human"]]["status"] == "in_progress"
        finals = (
            (human, {"CallStatus": "completed", "CallDuration": "42", "AnsweredBy": "human"}),
            (busy, {"CallStatus": "busy", "CallDuration": "0"}),
            (
                machine,
                {"CallStatus": "completed", "CallDuration": "7", "AnsweredBy": "machine_start"},
            ),
        )
        for form, params in finals:
            response = await post_twilio(client, form["StatusCallback"], params)
            assert response.status_code == 204, response.text
        await wait_until(lambda: all_final(client, tenant, call_id))
        await wait_until(lambda: _no_live_calls(dialer), within=5)

    found = await participants(client, tenant, call_id)
    outcome = {
        n: (p["status"], p["end_reason"], p["duration_seconds"], p["cost"])
        for n, p in found.items()
    }
    assert outcome == {
        NUMBERS["human"]: ("completed", "answered", 42, 0.1),
        NUMBERS["busy"]: ("failed", "busy", None, 0),
        NUMBERS["machine"]: ("completed", "voicemail", 7, 0.05),
    }


@pytest.mark.one_backend
@pytest.mark.parametrize("forgery", ["unsigned", "wrong_token", "tampered"])
async def test_forged_twilio_callbacks_are_403_and_change_nothing(
    client, app, database_url, tenant, agent, fake_twilio, forgery
) -> None:
    call_id = await queue_batch(client, tenant, agent, [NUMBERS["human"]])
    async with dialer_through(app, database_url, "twilio", fake_twilio.url):
        await wait_until(lambda: _count(fake_twilio, 1))
        [form] = [dict(r.body) for r in fake_twilio.of("POST", "/Calls.json")]
        await _forge_twilio(client, tenant, call_id, form, forgery)
        real = {"CallStatus": "no-answer"}
        assert (await post_twilio(client, form["StatusCallback"], real)).status_code == 204
        await wait_until(lambda: all_final(client, tenant, call_id))


async def _forge_twilio(client, tenant, call_id, form, forgery) -> None:
    before = await participants(client, tenant, call_id)
    params = {"CallStatus": "completed", "CallDuration": "600"}
    url = form["StatusCallback"]
    if forgery == "unsigned":
        response = await post_twilio(client, url, params, headers={})
    elif forgery == "wrong_token":
        response = await post_twilio(client, url, params, token="guessed-token")
    else:
        signed = {"X-Twilio-Signature": twilio_signature(url, {**params, "CallDuration": "1"})}
        response = await post_twilio(client, url, params, headers=signed)
    assert response.status_code == 403, response.text
    assert error_code(response) == "invalid_signature"
    assert await participants(client, tenant, call_id) == before


async def test_callbacks_are_refused_where_the_carrier_is_not_configured(database_url) -> None:
    bare = create_app(Settings(database_url=database_url))
    async with LifespanManager(bare):
        transport = httpx.ASGITransport(app=bare)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as plain:
            for path in ("/v1/telephony/plivo/hangup", "/v1/telephony/twilio/status"):
                response = await plain.post(f"{path}?attempt=att_1", data={"CallStatus": "busy"})
                assert response.status_code == 403
                assert error_code(response) == "callbacks_not_configured"


# --- helpers --------------------------------------------------------------------------------------


async def _count(fake, n: int) -> bool:
    return len(fake.of("POST", "/Call/" if isinstance(fake, FakePlivo) else "/Calls.json")) >= n


async def _state_is(fake: FakePlivo, call_id: str, state: str) -> bool:
    return fake.state.get(call_id) == state


async def _no_live_calls(dialer) -> bool:
    return not dialer.live


def _plivo_headers_for(url: str, params: dict[str, str]) -> dict[str, str]:
    nonce = "n-1"
    return {
        "X-Plivo-Signature-V3": plivo_signature(url, params, nonce),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


# --- a streaming agent: the answer connects its stream -------------------------------------------


@pytest.mark.parametrize("carrier", ["plivo", "twilio"])
async def test_the_answer_connects_a_streaming_agent(
    client, app, database_url, tenant, carrier, fake_plivo, fake_twilio
) -> None:
    """Through the API and a running dialer: the answer callback of a call whose agent has a
    stream_url answers the carrier's stream document, naming the call and participant as the
    database has them (both backends); the documents pass the carrier's XML rules."""
    await register_number(client, tenant, "+15559990000")
    streaming = await create_agent(client, tenant, stream_url="wss://agent.example.com/s")
    queued = await client.post(
        "/v1/calls/batch",
        json={
            "agent_id": streaming["id"],
            "recipients": [{"to": NUMBERS["human"], "metadata": {"name": "Ann"}}],
            "variables": {"plan": "gold"},
        },
        headers=tenant.headers,
    )
    call_id = queued.json()["id"]
    [participant] = (await participants(client, tenant, call_id)).values()
    fake = fake_plivo if carrier == "plivo" else fake_twilio
    async with dialer_through(app, database_url, carrier, fake.url):
        await wait_until(lambda: _count(fake, 1))
        assert fake.problems == []
        if carrier == "plivo":
            [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
            answer = await post_plivo(client, body["answer_url"], {"CallUUID": "cu-1"})
            assert plivo_xml_problems(answer.text) == []
            [stream] = ET.fromstring(answer.text)
            parameters = dict(parse_qsl(urlsplit(stream.text or "").query))
            ended = (body["hangup_url"], {"CallUUID": "cu-1", "CallStatus": "completed"})
        else:
            [form] = [dict(r.body) for r in fake_twilio.of("POST", "/Calls.json")]
            answer = await post_twilio(client, form["Url"], {"AnsweredBy": "human"})
            assert twiml_problems(answer.text) == []
            [[stream]] = ET.fromstring(answer.text)
            parameters = {p.get("name"): p.get("value") for p in stream}
            ended = (form["StatusCallback"], {"CallStatus": "completed", "CallDuration": "3"})
        post = post_plivo if carrier == "plivo" else post_twilio
        assert (await post(client, *ended)).status_code == 204
        await wait_until(lambda: all_final(client, tenant, call_id))
    assert answer.status_code == 200
    assert parameters["call_id"] == call_id
    assert parameters["participant_id"] == participant["id"]
    assert parameters["agent_id"] == streaming["id"]
    # Plivo's answer said nothing of a machine: unknown
    assert parameters["answered_by"] == ("human" if carrier == "twilio" else "unknown")
    assert json.loads(parameters["variables"]) == {"plan": "gold", "name": "Ann"}
    assert parameters["attempt_id"].startswith("att")


async def test_answers_without_a_stream_pass_the_carriers_rules(
    client, app, database_url, tenant, agent, fake_plivo, fake_twilio
) -> None:
    """An agent without stream_url: the held line and the hang-up documents, as before."""
    await queue_batch(client, tenant, agent, [NUMBERS["human"]])
    async with dialer_through(app, database_url, "plivo", fake_plivo.url):
        await wait_until(lambda: _count(fake_plivo, 1))
        [body] = [r.body for r in fake_plivo.of("POST", "/Call/")]
        held = await post_plivo(client, body["answer_url"], {"CallUUID": "cu-1"})
        machine = await post_plivo(client, body["answer_url"], {"Machine": "true"})
        await post_plivo(
            client, body["hangup_url"], {"CallUUID": "cu-1", "CallStatus": "completed"}
        )
    for document in (held.text, machine.text):
        assert plivo_xml_problems(document) == []
    assert [c.tag for c in ET.fromstring(held.text)] == ["Wait"]
    assert [c.tag for c in ET.fromstring(machine.text)] == ["Hangup"]
    for params in ({}, {"AnsweredBy": "machine_start"}):
        twiml = twilio.answer_twiml(params, voicemail_behavior="hangup")
        assert twiml_problems(twiml) == []
