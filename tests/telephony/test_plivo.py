"""The Plivo adapter against a LOCAL FAKE Plivo API (tests/telephony/fakes.py), over real HTTP
on loopback — never the real service. The fake checks each request as Plivo documents it
(path, basic auth, JSON fields) and records it. Signatures are checked against the official
`plivo` package's V3 implementation."""

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils.signature_v3 import validate_v3_signature

from outdial.telephony import plivo
from outdial.telephony.base import CallEvent, CarrierUnreachable, DialRequest
from outdial.telephony.carrier import PlaceRefused
from tests.telephony.conftest import PLIVO_AUTH_ID, PLIVO_TOKEN, PUBLIC_URL, plivo_signature
from tests.telephony.fakes import FakePlivo, plivo_xml_problems
from tests.telephony.stream_targets import TRICKY_VARIABLES, target


async def _ignore(_: CallEvent) -> None:
    pass


@pytest.fixture
async def provider(fake_plivo: FakePlivo) -> AsyncIterator[plivo.PlivoProvider]:
    carrier = plivo.PlivoProvider(
        _ignore,
        auth_id=PLIVO_AUTH_ID,
        auth_token=PLIVO_TOKEN,
        api_url=fake_plivo.url,  # type: ignore[attr-defined]
        public_url=PUBLIC_URL,
    )
    yield carrier
    await carrier.aclose()


def dial(attempt_id: str = "att_1", **fields: object) -> DialRequest:
    values: dict = {"to": "+15559990001", "from_number": "+15559990000", "ring_timeout_seconds": 25}
    return DialRequest(attempt_id=attempt_id, **{**values, **fields})


async def test_place_makes_the_documented_call_request(provider, fake_plivo) -> None:
    request_uuid = await provider.place(dial(voicemail_behavior="leave_message"))

    assert fake_plivo.problems == []
    [made] = fake_plivo.of("POST", "/Call/")
    assert made.path == f"/v1/Account/{PLIVO_AUTH_ID}/Call/"
    body = made.body
    assert request_uuid in fake_plivo.state
    assert (body["from"], body["to"]) == ("15559990000", "15559990001")
    assert body["ring_timeout"] == 25
    assert body["machine_detection"] == "true"
    assert body["answer_method"] == body["ring_method"] == body["hangup_method"] == "POST"
    for name, path in (("answer_url", "answer"), ("ring_url", "ring"), ("hangup_url", "hangup")):
        url = urlsplit(body[name])
        assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL
        assert url.path == f"/v1/telephony/plivo/{path}"
        assert parse_qs(url.query)["attempt"] == ["att_1"]
    assert parse_qs(urlsplit(body["answer_url"]).query)["voicemail"] == ["leave_message"]


async def test_hangup_ends_the_call_by_its_stored_id_or_cancels_the_request(
    provider, fake_plivo
) -> None:
    request_uuid = await provider.place(dial())
    fake_plivo.state["call-uuid-1"] = "live"
    await provider.hangup("att_1", provider_call_id="call-uuid-1")
    assert fake_plivo.state["call-uuid-1"] == "ended"
    assert fake_plivo.of("DELETE")[-1].path.endswith("/Call/call-uuid-1/")

    # Not connected yet: known only by its request uuid, which "Hang up a call" also takes.
    await provider.hangup("att_1")
    assert fake_plivo.state[request_uuid] == "ended"
    assert fake_plivo.of("DELETE")[-1].path.endswith(f"/Call/{request_uuid}/")

    # An attempt nobody placed is ignored; one already over is not an error.
    before = len(fake_plivo.requests)
    await provider.hangup("att_unknown")
    assert len(fake_plivo.requests) == before
    await provider.hangup("att_1", provider_call_id="call-uuid-1")
    assert fake_plivo.problems == []


async def test_lookup_asks_plivo_for_live_queued_and_ended_calls(provider, fake_plivo) -> None:
    request_uuid = await provider.place(dial())
    assert (await provider.lookup("att_1")).status == "live"  # queued at Plivo
    fake_plivo.state["cu-live"] = "live"
    assert (await provider.lookup("att_x", provider_call_id="cu-live")).status == "live"

    fake_plivo.records["cu-done"] = {"answer_time": "2026-11-23 10:00:03", "call_duration": 47}
    done = await provider.lookup("att_y", provider_call_id="cu-done")
    assert done.status == "ended" and done.end is not None
    assert (done.end.attempt_id, done.end.end_reason, done.end.talk_seconds) == (
        "att_y",
        "answered",
        47,
    )
    fake_plivo.records["cu-busy"] = {"answer_time": None, "hangup_cause_name": "Busy Line"}
    busy = await provider.lookup("att_z", provider_call_id="cu-busy")
    assert busy.end is not None and busy.end.end_reason == "busy"

    fake_plivo.state[request_uuid] = "gone"
    assert (await provider.lookup("att_1")).status == "unknown"
    assert fake_plivo.problems == []


async def test_a_refused_dial_ends_and_an_unsent_one_was_never_received(
    provider, fake_plivo
) -> None:
    fake_plivo.refuse_with = 400
    with pytest.raises(PlaceRefused):
        await provider.place(dial("att_refused"))
    refused = await provider.lookup("att_refused")
    assert refused.status == "ended" and refused.end is not None
    assert refused.end.end_reason == "carrier_error"

    # Nothing listening: the request never left, so a redial cannot dial twice.
    nowhere = plivo.PlivoProvider(
        _ignore,
        auth_id=PLIVO_AUTH_ID,
        auth_token=PLIVO_TOKEN,
        api_url="http://127.0.0.1:9",
        public_url=PUBLIC_URL,
    )
    with pytest.raises(CarrierUnreachable):
        await nowhere.place(dial("att_unsent"))
    assert (await nowhere.lookup("att_unsent")).status == "never_received"
    assert (await nowhere.lookup("att_other")).status == "unknown"
    await nowhere.aclose()


async def test_wrong_credentials_are_refused_by_the_fake(fake_plivo) -> None:
    """The fake really checks basic auth (so the passing tests above mean something)."""
    wrong = plivo.PlivoProvider(
        _ignore,
        auth_id=PLIVO_AUTH_ID,
        auth_token="not-the-token",
        api_url=fake_plivo.url,
        public_url=PUBLIC_URL,
    )
    with pytest.raises(PlaceRefused, match="401"):
        await wrong.place(dial())
    await wrong.aclose()
    assert fake_plivo.problems == [
        f"POST /v1/Account/{PLIVO_AUTH_ID}/Call/: bad or missing basic auth"
    ]


# --- the V3 signature ----------------------------------------------------------------------------

URL = f"{PUBLIC_URL}/v1/telephony/plivo/hangup?attempt=att_1"
PARAMS = {"CallUUID": "cu-1", "CallStatus": "completed", "Duration": "42", "Machine": "false"}


def test_signature_made_by_the_official_package_is_accepted() -> None:
    given_sig = plivo_signature(URL, PARAMS, "nonce-1")
    assert (
        plivo.signature(
            url=URL, params=list(PARAMS.items()), nonce="nonce-1", auth_token=PLIVO_TOKEN
        )
        == given_sig
    )
    assert plivo.signature_valid(
        url=URL,
        params=PARAMS.items(),
        nonce="nonce-1",
        signatures=given_sig,
        auth_token=PLIVO_TOKEN,
    )
    # Plivo may list several signatures (one per token); any one matching is enough.
    assert plivo.signature_valid(
        url=URL,
        params=PARAMS.items(),
        nonce="nonce-1",
        signatures=f"bm90IGl0,{given_sig}",
        auth_token=PLIVO_TOKEN,
    )


@pytest.mark.parametrize(
    ("url", "params", "nonce", "token"),
    [
        (URL.replace("att_1", "att_2"), PARAMS, "nonce-1", PLIVO_TOKEN),  # another attempt
        (URL, {**PARAMS, "Duration": "4200"}, "nonce-1", PLIVO_TOKEN),  # a changed parameter
        (URL, {**PARAMS, "Extra": "x"}, "nonce-1", PLIVO_TOKEN),  # an added parameter
        (URL, PARAMS, "nonce-2", PLIVO_TOKEN),  # another nonce
        (URL, PARAMS, "nonce-1", "another-token"),  # signed by someone else
        (URL.replace("https://", "http://"), PARAMS, "nonce-1", PLIVO_TOKEN),  # another URL
    ],
)
def test_anything_changed_breaks_the_signature(url, params, nonce, token) -> None:
    signed = plivo_signature(URL, PARAMS, "nonce-1")
    assert not plivo.signature_valid(
        url=url, params=params.items(), nonce=nonce, signatures=signed, auth_token=token
    )


def test_a_missing_signature_or_nonce_is_refused() -> None:
    signed = plivo_signature(URL, PARAMS, "nonce-1")
    for nonce, signatures in (("", signed), ("nonce-1", ""), ("", "")):
        assert not plivo.signature_valid(
            url=URL,
            params=PARAMS.items(),
            nonce=nonce,
            signatures=signatures,
            auth_token=PLIVO_TOKEN,
        )


text = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&=#%+"))


@settings(max_examples=60, deadline=None)
@given(
    params=st.dictionaries(text.filter(bool), text, max_size=6),
    query=st.dictionaries(text.filter(bool), text, max_size=3),
    nonce=text.filter(bool),
)
def test_our_check_agrees_with_the_official_validator(params, query, nonce) -> None:
    """For any parameters and query: what the official package signs we accept, and the
    official validator accepts what we would sign."""
    url = f"{PUBLIC_URL}/v1/telephony/plivo/ring" + (
        "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    )
    official = plivo_signature(url, params, nonce)
    ours = plivo.signature(url=url, params=params.items(), nonce=nonce, auth_token=PLIVO_TOKEN)
    assert ours == official
    assert validate_v3_signature("POST", url, nonce, PLIVO_TOKEN, ours, dict(params))


# --- callbacks to events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "reason", "talk"),
    [
        (
            {"CallStatus": "completed", "Duration": "42", "HangupCause": "NORMAL_CLEARING"},
            "answered",
            42,
        ),
        ({"CallStatus": "completed", "Duration": "9", "Machine": "true"}, "voicemail", 9),
        ({"CallStatus": "busy", "HangupCause": "USER_BUSY", "Duration": "0"}, "busy", 0),
        ({"CallStatus": "no-answer", "HangupCause": "NO_ANSWER"}, "no_answer", 0),
        ({"CallStatus": "timeout", "HangupCauseName": "Ring Timeout Reached"}, "no_answer", 0),
        ({"CallStatus": "failed", "HangupCause": "CALL_REJECTED"}, "rejected", 0),
        (
            {"CallStatus": "failed", "HangupCauseName": "Invalid Destination Address"},
            "invalid_number",
            0,
        ),
        ({"CallStatus": "failed", "HangupCause": "UNALLOCATED_NUMBER"}, "invalid_number", 0),
        ({"CallStatus": "failed", "HangupCause": "RECOVERY_ON_TIMER_EXPIRE"}, "carrier_error", 0),
        ({"CallStatus": "cancel", "HangupCauseName": "Canceled"}, "no_answer", 0),
        ({}, "carrier_error", 0),
    ],
)
def test_hangup_callbacks_map_to_end_reasons(params, reason, talk) -> None:
    event = plivo.ended_event("att_1", params)
    assert (event.kind, event.end_reason, event.talk_seconds) == ("ended", reason, talk)


def test_answer_callback_and_xml() -> None:
    human = plivo.answered_event("att_1", {"CallUUID": "cu-9", "CallStatus": "in-progress"})
    assert (human.kind, human.machine, human.provider_call_id) == ("answered", False, "cu-9")
    assert plivo.answered_event("att_1", {"Machine": "true"}).machine

    held = ET.fromstring(plivo.answer_xml({}, voicemail_behavior="hangup"))
    assert held.tag == "Response" and [c.tag for c in held] == ["Wait"]
    machine = {"Machine": "true"}
    hung = ET.fromstring(plivo.answer_xml(machine, voicemail_behavior="hangup"))
    assert [c.tag for c in hung] == ["Hangup"]
    kept = ET.fromstring(plivo.answer_xml(machine, voicemail_behavior="leave_message"))
    assert [c.tag for c in kept] == ["Wait"]


# --- the agent's stream --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "behavior", "expected"),
    [
        ("false", "hangup", "human"),
        (None, "hangup", "unknown"),
        ("true", "leave_message", "machine"),
    ],
)
def test_an_agent_with_a_stream_is_connected(machine, behavior, expected) -> None:
    params = {"Machine": machine} if machine else {}
    document = plivo.answer_xml(params, voicemail_behavior=behavior, stream=target())
    assert plivo_xml_problems(document) == []
    [stream] = ET.fromstring(document)
    assert stream.tag == "Stream"
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "audioTrack": "inbound",
        "contentType": "audio/x-mulaw;rate=8000",
    }
    url = urlsplit((stream.text or "").strip())
    assert (url.scheme, url.netloc, url.path) == ("wss", "agent.example.com", "/stream")
    # the stream URL's own query first, then the call's parameters
    query = parse_qsl(url.query)
    assert query[:2] == [("tenant", "acme"), ("v", "2")]
    parameters = dict(query[2:])
    assert json.loads(parameters.pop("variables")) == TRICKY_VARIABLES
    assert parameters == {
        "call_id": "call_1",
        "participant_id": "participant_1",
        "attempt_id": "att_1",
        "agent_id": "0193f0c2-0000-7000-8000-000000000001",
        "to": "+15559990001",
        "from": "+15559990000",
        "answered_by": expected,
        "campaign_id": "cmp_1",
    }


def test_a_machine_is_hung_up_on_when_the_agent_says_so_even_with_a_stream() -> None:
    document = plivo.answer_xml({"Machine": "true"}, voicemail_behavior="hangup", stream=target())
    assert plivo_xml_problems(document) == []
    assert [c.tag for c in ET.fromstring(document)] == ["Hangup"]


def test_the_plivo_xml_check_catches_what_plivo_refuses() -> None:
    bad = [
        "<Response><Stream>ws://agent.example.com/s</Stream></Response>",
        '<Response><Stream bidirectional="yes">wss://a.example.com</Stream></Response>',
        '<Response><Stream bidirectional="true" audioTrack="both">wss://a.example.com</Stream>'
        "</Response>",
        '<Response><Stream keepCallAlive="true">wss://a.example.com</Stream></Response>',
        '<Response><Stream contentType="audio/x-alaw;rate=8000">wss://a.example.com</Stream>'
        "</Response>",
        '<Response><Stream extraHeaders="to=+15559990001">wss://a.example.com</Stream></Response>',
        '<Response><Stream streamTimeout="0">wss://a.example.com</Stream></Response>',
        "<Response><Speak>hi</Speak></Response>",
    ]
    for document in bad:
        assert plivo_xml_problems(document), document
    fine = '<Response><Stream extraHeaders="a=1,b2=x">wss://a.example.com</Stream></Response>'
    assert plivo_xml_problems(fine) == []
