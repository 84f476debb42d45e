"""The Twilio adapter against a LOCAL FAKE Twilio API (tests/telephony/fakes.py), over real
HTTP on loopback — never the real service. The fake checks each request as Twilio documents
it (path, basic auth, form fields) and records it. Signatures are checked against the
official `twilio` package's RequestValidator."""

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from outdial.telephony import twilio
from outdial.telephony.base import CallEvent, DialRequest
from outdial.telephony.carrier import PlaceRefused
from tests.telephony.conftest import PUBLIC_URL, TWILIO_SID, TWILIO_TOKEN, twilio_signature
from tests.telephony.fakes import FakeTwilio, twiml_problems
from tests.telephony.stream_targets import TRICKY_VARIABLES, target


async def _ignore(_: CallEvent) -> None:
    pass


@pytest.fixture
async def provider(fake_twilio: FakeTwilio) -> AsyncIterator[twilio.TwilioProvider]:
    carrier = twilio.TwilioProvider(
        _ignore,
        account_sid=TWILIO_SID,
        auth_token=TWILIO_TOKEN,
        api_url=fake_twilio.url,  # type: ignore[attr-defined]
        public_url=PUBLIC_URL,
    )
    yield carrier
    await carrier.aclose()


def dial(attempt_id: str = "att_1", **fields: object) -> DialRequest:
    values: dict = {"to": "+15559990001", "from_number": "+15559990000", "ring_timeout_seconds": 20}
    return DialRequest(attempt_id=attempt_id, **{**values, **fields})


async def test_place_makes_the_documented_calls_request(provider, fake_twilio) -> None:
    sid = await provider.place(dial())

    assert fake_twilio.problems == []
    [made] = fake_twilio.of("POST", "/Calls.json")
    assert made.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
    form = dict(made.body)
    assert sid in fake_twilio.calls and sid.startswith("CA")
    assert (form["To"], form["From"], form["Timeout"]) == ("+15559990001", "+15559990000", "20")
    assert form["MachineDetection"] == "Enable"
    assert sorted(v for k, v in made.body if k == "StatusCallbackEvent") == sorted(
        ["initiated", "ringing", "answered", "completed"]
    )
    for name, path in (("Url", "answer"), ("StatusCallback", "status")):
        url = urlsplit(form[name])
        assert (
            f"{url.scheme}://{url.netloc}{url.path}" == f"{PUBLIC_URL}/v1/telephony/twilio/{path}"
        )
        assert parse_qs(url.query)["attempt"] == ["att_1"]

    await provider.place(dial("att_2", voicemail_behavior="leave_message"))
    assert dict(fake_twilio.of("POST", "/Calls.json")[-1].body)["MachineDetection"] == (
        "DetectMessageEnd"
    )


async def test_hangup_updates_the_call_to_completed(provider, fake_twilio) -> None:
    sid = await provider.place(dial())
    fake_twilio.calls[sid]["status"] = "in-progress"
    await provider.hangup("att_1")
    assert fake_twilio.calls[sid]["status"] == "completed"
    update = fake_twilio.of("POST", f"/Calls/{sid}.json")[-1]
    assert update.body == [("Status", "completed")]
    # by the stored id, from another process; an unknown call is not an error
    await provider.hangup("att_elsewhere", provider_call_id="CA" + "f" * 32)
    before = len(fake_twilio.requests)
    await provider.hangup("att_unknown")
    assert len(fake_twilio.requests) == before
    assert fake_twilio.problems == []


async def test_lookup_fetches_the_call(provider, fake_twilio) -> None:
    sid = await provider.place(dial())
    for status in ("queued", "ringing", "in-progress"):
        fake_twilio.calls[sid]["status"] = status
        assert (await provider.lookup("att_1")).status == "live"
    fake_twilio.calls[sid].update(status="completed", duration="61", answered_by="human")
    done = await provider.lookup("att_1")
    assert done.end is not None
    assert (done.status, done.end.end_reason, done.end.talk_seconds) == ("ended", "answered", 61)
    fake_twilio.calls[sid].update(answered_by="machine_end_beep")
    machine = await provider.lookup("att_1", provider_call_id=sid)
    assert machine.end is not None and machine.end.end_reason == "voicemail"
    fake_twilio.calls[sid].update(status="no-answer", duration="0")
    unanswered = await provider.lookup("att_1")
    assert unanswered.end is not None and unanswered.end.end_reason == "no_answer"
    missing = await provider.lookup("att_2", provider_call_id="CA" + "0" * 32)
    assert missing.status == "unknown"
    assert (await provider.lookup("att_never_placed")).status == "unknown"


async def test_a_refused_dial_ends_and_wrong_credentials_are_refused(fake_twilio) -> None:
    wrong = twilio.TwilioProvider(
        _ignore,
        account_sid=TWILIO_SID,
        auth_token="not-the-token",
        api_url=fake_twilio.url,
        public_url=PUBLIC_URL,
    )
    with pytest.raises(PlaceRefused, match="401"):
        await wrong.place(dial("att_refused"))
    refused = await wrong.lookup("att_refused")
    assert refused.end is not None and refused.end.end_reason == "carrier_error"
    await wrong.aclose()
    assert len(fake_twilio.problems) == 1 and "basic auth" in fake_twilio.problems[0]


# --- the signature -------------------------------------------------------------------------------

URL = f"{PUBLIC_URL}/v1/telephony/twilio/status?attempt=att_1"
PARAMS = {"CallSid": "CA1", "CallStatus": "completed", "CallDuration": "42"}


def test_official_signatures_are_accepted_and_changes_refused() -> None:
    given_sig = twilio_signature(URL, PARAMS)
    assert twilio.signature_valid(
        url=URL, params=PARAMS.items(), given=given_sig, auth_token=TWILIO_TOKEN
    )
    # Twilio may sign the URL with its default port spelled out.
    with_port = URL.replace(".com/", ".com:443/")
    assert twilio.signature_valid(
        url=URL,
        params=PARAMS.items(),
        given=twilio_signature(with_port, PARAMS),
        auth_token=TWILIO_TOKEN,
    )
    for url, params, token in (
        (URL.replace("att_1", "att_2"), PARAMS, TWILIO_TOKEN),
        (URL, {**PARAMS, "CallDuration": "4200"}, TWILIO_TOKEN),
        (URL, {**PARAMS, "AnsweredBy": "human"}, TWILIO_TOKEN),
        (URL, PARAMS, "another-token"),
    ):
        assert not twilio.signature_valid(
            url=url, params=params.items(), given=given_sig, auth_token=token
        )
    assert not twilio.signature_valid(
        url=URL, params=PARAMS.items(), given="", auth_token=TWILIO_TOKEN
    )


text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF))


@settings(max_examples=60, deadline=None)
@given(params=st.dictionaries(text.filter(bool), text, max_size=8))
def test_our_check_agrees_with_the_official_validator(params) -> None:
    ours = twilio.signature(url=URL, params=params.items(), auth_token=TWILIO_TOKEN)
    assert ours == RequestValidator(TWILIO_TOKEN).compute_signature(URL, params)
    assert RequestValidator(TWILIO_TOKEN).validate(URL, params, ours)


# --- callbacks to events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "kind", "reason", "talk"),
    [
        ({"CallStatus": "initiated"}, None, None, 0),
        ({"CallStatus": "ringing"}, None, None, 0),
        ({"CallStatus": "in-progress"}, "answered", None, 0),
        ({"CallStatus": "completed", "CallDuration": "42"}, "ended", "answered", 42),
        (
            {"CallStatus": "completed", "CallDuration": "12", "AnsweredBy": "machine_start"},
            "ended",
            "voicemail",
            12,
        ),
        (
            {"CallStatus": "completed", "CallDuration": "5", "AnsweredBy": "fax"},
            "ended",
            "voicemail",
            5,
        ),
        ({"CallStatus": "busy", "CallDuration": "0"}, "ended", "busy", 0),
        ({"CallStatus": "no-answer"}, "ended", "no_answer", 0),
        ({"CallStatus": "canceled"}, "ended", "no_answer", 0),
        ({"CallStatus": "failed"}, "ended", "carrier_error", 0),
        ({"CallStatus": "failed", "SipResponseCode": "404"}, "ended", "invalid_number", 0),
        ({"CallStatus": "failed", "SipResponseCode": "603"}, "ended", "rejected", 0),
    ],
)
def test_status_callbacks_map_to_events(params, kind, reason, talk) -> None:
    event = twilio.status_event("att_1", params)
    if kind is None:
        assert event is None
        return
    assert event is not None
    assert (event.kind, event.end_reason, event.talk_seconds) == (kind, reason, talk)


def test_answered_by_a_machine_is_marked_and_the_twiml_follows_the_agent() -> None:
    event = twilio.status_event(
        "att_1", {"CallStatus": "in-progress", "AnsweredBy": "machine_start"}
    )
    assert event is not None and event.machine
    machine = {"AnsweredBy": "machine_start"}
    assert [
        c.tag for c in ET.fromstring(twilio.answer_twiml(machine, voicemail_behavior="hangup"))
    ] == ["Hangup"]
    kept = ET.fromstring(twilio.answer_twiml(machine, voicemail_behavior="leave_message"))
    assert kept.tag == "Response" and [c.tag for c in kept] == ["Pause"]
    human = ET.fromstring(twilio.answer_twiml({"AnsweredBy": "human"}, voicemail_behavior="hangup"))
    assert [c.tag for c in human] == ["Pause"]


# --- the agent's stream --------------------------------------------------------------------------


def stream_parameters(document: str) -> tuple[str, dict[str, str]]:
    [connect] = ET.fromstring(document)
    [stream] = connect
    assert (connect.tag, stream.tag) == ("Connect", "Stream")
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream}


@pytest.mark.parametrize(
    ("answered_by", "behavior", "expected"),
    [
        ("human", "hangup", "human"),
        ("", "hangup", "unknown"),
        ("unknown", "leave_message", "unknown"),
        ("machine_end_beep", "leave_message", "machine"),
        ("fax", "leave_message", "machine"),
    ],
)
def test_an_agent_with_a_stream_is_connected(answered_by, behavior, expected) -> None:
    params = {"AnsweredBy": answered_by} if answered_by else {}
    document = twilio.answer_twiml(params, voicemail_behavior=behavior, stream=target())
    assert twiml_problems(document) == []
    url, parameters = stream_parameters(document)
    # Twilio takes no query string on a stream URL: its parameters become <Parameter>s
    assert url == "wss://agent.example.com/stream"
    assert json.loads(parameters.pop("variables")) == TRICKY_VARIABLES
    assert parameters == {
        "tenant": "acme",
        "v": "2",
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
    document = twilio.answer_twiml(
        {"AnsweredBy": "machine_start"}, voicemail_behavior="hangup", stream=target()
    )
    assert twiml_problems(document) == []
    assert [c.tag for c in ET.fromstring(document)] == ["Hangup"]


def test_the_twiml_check_catches_what_twilio_refuses() -> None:
    bad = [
        '<Response><Connect><Stream url="ws://agent.example.com/s"/></Connect></Response>',
        '<Response><Connect><Stream url="wss://agent.example.com/s?x=1"/></Connect></Response>',
        '<Response><Connect><Stream url="wss://a.example.com"><Parameter value="v"/></Stream>'
        "</Connect></Response>",
        "<Response><Connect/></Response>",
        "<Response><Say>hi</Say></Response>",
        "<Reply/>",
        "<Response>",
    ]
    for document in bad:
        assert twiml_problems(document), document
