"""The `sip` provider against a real SIP peer (sipp on loopback), one scenario per outcome,
plus its wire format, digest credentials, retransmission timers and configuration."""

import asyncio
import hashlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from outdial.config import Settings
from outdial.telephony import sip, sip_transaction
from outdial.telephony.base import CallEvent, CarrierUnreachable, DialRequest
from outdial.telephony.registry import create_provider
from outdial.telephony.sip import SipProvider, Trunk
from outdial.telephony.sip_call import outcome_of
from outdial.telephony.sip_message import (
    Challenge,
    SipMessage,
    SipParseError,
    UnsupportedChallenge,
    digest_credentials,
    param,
    parse,
    parse_challenge,
    response_to,
    uri_of,
)
from tests.telephony.sipp_peer import Sipp, scenario_from_template, sipp
from tests.telephony.test_simulated import Recorder

FROM = "+15559990000"
TO = "+15551230001"
USERNAME, PASSWORD = "outdial", "trunk-secret"  # as tests/telephony/sipp/auth_challenge.xml

MakeProvider = Callable[..., SipProvider]


def request(attempt_id: str = "att_sip", *, ring_timeout: int = 15) -> DialRequest:
    return DialRequest(
        attempt_id=attempt_id, to=TO, from_number=FROM, ring_timeout_seconds=ring_timeout
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_provider(recorder: Recorder) -> AsyncIterator[MakeProvider]:
    """SIP providers on the recorder, closed after the test."""
    made: list[SipProvider] = []

    def make(trunk: str, **options: object) -> SipProvider:
        provider = SipProvider(recorder, trunk=Trunk.parse(trunk), **options)  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def assert_sipp_passed(peer: Sipp) -> None:
    code = await peer.exit_code()
    assert code == 0, f"sipp exited {code}:\n{peer.errors()}"


async def ended(recorder: Recorder, attempt_id: str, within: float = 10.0) -> CallEvent:
    return await recorder.wait_for(attempt_id, "ended", within)


# --- against sipp, one scenario per outcome ---------------------------------------------------


async def test_answered_then_the_far_end_hangs_up(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("answer_then_bye.xml", tmp_path, "-d", "2000") as peer:
        provider = make_provider(peer.trunk)
        call_id = await provider.place(request())
        answered = await recorder.wait_for("att_sip", "answered")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)
    assert call_id.startswith("att_sip.")
    assert [e.kind for e in recorder.of("att_sip")] == ["answered", "ended"]
    assert (end.end_reason, end.talk_seconds) == ("answered", 2)
    assert 1.9 <= (end.at - answered.at).total_seconds() < 2.5
    state = await provider.lookup("att_sip")
    assert (state.status, state.end) == ("ended", end)


async def test_answered_then_we_hang_up(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("answer_wait_bye.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request())
        answered = await recorder.wait_for("att_sip", "answered")
        live = await provider.lookup("att_sip")
        assert live.status == "live" and live.answered_at is not None
        await asyncio.sleep(1.2)
        await provider.hangup("att_sip")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)
    assert (end.end_reason, end.talk_seconds) == ("answered", 1)
    assert [e.kind for e in recorder.of("att_sip")] == ["answered", "ended"]
    assert end.at > answered.at


@pytest.mark.parametrize(
    ("status", "reason", "end_reason"),
    [
        ("486", "Busy Here", "busy"),
        ("600", "Busy Everywhere", "busy"),
        ("603", "Decline", "rejected"),
        ("480", "Temporarily Unavailable", "no_answer"),
        ("408", "Request Timeout", "no_answer"),
        ("404", "Not Found", "invalid_number"),
        ("484", "Address Incomplete", "invalid_number"),
        ("503", "Service Unavailable", "carrier_error"),
    ],
)
async def test_a_final_error_response_is_acked_and_ends_the_call_as_its_status_says(
    make_provider: MakeProvider,
    recorder: Recorder,
    tmp_path: Path,
    status: str,
    reason: str,
    end_reason: str,
) -> None:
    scenario = scenario_from_template("reject.xml", tmp_path, STATUS=status, REASON=reason)
    async with sipp(scenario, tmp_path) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request())
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)  # the scenario ends with our ACK
    assert [e.kind for e in recorder.of("att_sip")] == ["ended"]
    assert (end.end_reason, end.talk_seconds) == (end_reason, 0)


async def test_ringing_past_the_ring_timeout_is_canceled_as_no_answer(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("ring_until_cancel.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        started = time.monotonic()
        await provider.place(request(ring_timeout=1))
        end = await ended(recorder, "att_sip")
        waited = time.monotonic() - started
        await assert_sipp_passed(peer)  # CANCEL, 200, 487, and our ACK for the 487
    assert (end.end_reason, end.talk_seconds) == ("no_answer", 0)
    assert [e.kind for e in recorder.of("att_sip")] == ["ended"]
    assert 1.0 <= waited < 3.0


async def test_hanging_up_while_it_rings_cancels(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("ring_until_cancel.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        started = time.monotonic()
        await provider.place(request(ring_timeout=30))
        await asyncio.sleep(0.3)
        await provider.hangup("att_sip")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)
    assert (end.end_reason, end.talk_seconds) == ("no_answer", 0)
    assert time.monotonic() - started < 3.0


async def test_an_answer_that_crosses_our_cancel_is_acked_then_hung_up(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("answer_as_cancel_crosses.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request(ring_timeout=1))
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)  # our ACK for the 200, then our BYE
    assert [e.kind for e in recorder.of("att_sip")] == ["answered", "ended"]
    assert (end.end_reason, end.talk_seconds) == ("answered", 0)


async def test_a_digest_challenge_is_answered_then_the_call_proceeds(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("auth_challenge.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk, username=USERNAME, password=SecretStr(PASSWORD))
        await provider.place(request())
        await recorder.wait_for("att_sip", "answered")
        await asyncio.sleep(1.1)
        await provider.hangup("att_sip")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)  # sipp verified our credentials
    assert (end.end_reason, end.talk_seconds) == ("answered", 1)
    messages = (tmp_path / "messages.log").read_text()
    assert messages.count("CSeq: 1 INVITE") >= 2 and "CSeq: 2 INVITE" in messages
    assert PASSWORD not in messages


async def test_a_proxy_challenge_is_answered_with_proxy_authorization(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("proxy_auth_challenge.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk, username=USERNAME, password=SecretStr(PASSWORD))
        await provider.place(request())
        await recorder.wait_for("att_sip", "answered")
        await provider.hangup("att_sip")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)
    assert end.end_reason == "answered"
    # sipp cannot verify Proxy-Authorization, so recompute the digest from what it received.
    messages = (tmp_path / "messages.log").read_text()
    line = next(x for x in messages.splitlines() if x.startswith("Proxy-Authorization:"))
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', line.split("Digest ", 1)[1]))
    ha1 = hashlib.md5(f"{USERNAME}:sipp.test:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"INVITE:{fields['uri']}".encode()).hexdigest()
    expected = hashlib.md5(
        f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}".encode()
    ).hexdigest()
    assert fields["response"] == expected
    assert fields["uri"] == f"sip:{TO}@127.0.0.1:{peer.port}"


async def test_wrong_credentials_fail_the_call_as_a_carrier_error(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("auth_challenge.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk, username=USERNAME, password=SecretStr("wrong"))
        await provider.place(request())
        end = await ended(recorder, "att_sip")
        # The scenario's own check: it refused our credentials with 403 and failed the call.
        assert await peer.exit_code() != 0
    assert (end.end_reason, end.talk_seconds) == ("carrier_error", 0)


async def test_a_lost_invite_is_retransmitted_by_timer_a(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    # -nr: sipp takes the retransmission as a new message, which its scenario insists carries
    # the first INVITE's branch (a retransmission, not a new transaction).
    async with sipp("drop_first_invite.xml", tmp_path, "-nr") as peer:
        provider = make_provider(peer.trunk)
        started = time.monotonic()
        await provider.place(request())
        await recorder.wait_for("att_sip", "answered")
        answered_after = time.monotonic() - started
        await provider.hangup("att_sip")
        end = await ended(recorder, "att_sip")
        await assert_sipp_passed(peer)
    assert sip_transaction.T1 * 0.9 <= answered_after < 2 * sip_transaction.T1
    assert end.end_reason == "answered"


# --- timers without a peer ---------------------------------------------------------------------


@pytest.fixture
def silent_trunk(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A UDP socket that receives and never answers. A call to it can never be canceled (no
    provisional response), so closing the provider need not wait for hang-ups. Ask for it
    before `make_provider`, so that the provider is closed while the patch holds."""
    monkeypatch.setattr(sip, "CLOSE_GRACE", 0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
        trunk.bind(("127.0.0.1", 0))
        trunk.setblocking(False)
        yield trunk


def drain(trunk: socket.socket) -> list[bytes]:
    received = []
    while True:
        try:
            received.append(trunk.recv(65535))
        except BlockingIOError:
            return received


async def test_an_unanswered_invite_is_retransmitted_then_given_up_by_timer_b(
    make_provider: MakeProvider,
    recorder: Recorder,
    silent_trunk: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sip_transaction, "T1", 0.05)
    monkeypatch.setattr(sip_transaction, "TRANSACTION_TIMEOUT", 64 * 0.05)
    provider = make_provider(f"sip:127.0.0.1:{silent_trunk.getsockname()[1]}")
    started = time.monotonic()
    # Nothing ever came back: the trunk never took the call, which is no outcome of it.
    with pytest.raises(CarrierUnreachable, match=r"answered nothing in 3\.2 s"):
        await provider.place(request())
    elapsed = time.monotonic() - started
    invites = drain(silent_trunk)
    assert 3.2 <= elapsed < 4.5
    # Timer A: sent at 0, then T1, 2 T1, 4 T1... apart: 0, .05, .15, .35, .75, 1.55, 3.15 s.
    assert len(invites) == 7
    assert len(set(invites)) == 1, "a retransmission is the same message"
    assert (await provider.lookup("att_sip")).status == "never_received"
    await asyncio.sleep(0.05)
    assert recorder.of("att_sip") == []


def answer(trunk: socket.socket, invite: bytes, to: tuple[str, int], status: int = 100) -> None:
    """Send the UA a provisional response to this INVITE, as the trunk."""
    reason = {100: "Trying", 180: "Ringing"}[status]
    trunk.sendto(response_to(parse(invite), status, reason).encode(), to)


async def test_place_returns_once_the_trunk_has_answered_and_the_attempt_is_named(
    silent_trunk: socket.socket, make_provider: MakeProvider
) -> None:
    provider = make_provider(f"sip:127.0.0.1:{silent_trunk.getsockname()[1]}")
    placing = asyncio.create_task(provider.place(request("att_named")))
    sent = await receive(silent_trunk)
    await asyncio.sleep(0.05)
    assert not placing.done()  # the trunk has not answered yet
    answer(silent_trunk, sent, provider.local_address)
    call_id = await asyncio.wait_for(placing, 1.0)
    invite = parse(sent)
    assert (
        invite.method == "INVITE"
        and invite.uri == f"sip:{TO}@127.0.0.1:{silent_trunk.getsockname()[1]}"
    )
    assert invite.header("X-Outdial-Attempt") == "att_named"
    assert invite.call_id == call_id and call_id.startswith("att_named.")
    assert invite.header("Content-Type") == "application/sdp"
    assert b"m=audio" in invite.body and b"PCMU/8000" in invite.body
    assert FROM in (invite.header("From") or "") and param(invite.header("From") or "", "tag")
    assert (invite.branch or "").startswith("z9hG4bK")
    live = await provider.lookup("att_named")
    assert live.status == "live" and live.answered_at is None


async def test_requests_from_the_trunk_outside_a_dialog_are_answered(
    silent_trunk: socket.socket, make_provider: MakeProvider
) -> None:
    provider = make_provider(f"sip:127.0.0.1:{silent_trunk.getsockname()[1]}")
    placing = asyncio.create_task(provider.place(request()))
    invite = await receive(silent_trunk)
    answer(silent_trunk, invite, provider.local_address, 180)
    await asyncio.wait_for(placing, 1.0)
    ringing_call_id = parse(invite).call_id

    async def ask(method: str, call_id: str) -> SipMessage:
        silent_trunk.sendto(
            (
                f"{method} sip:{FROM}@127.0.0.1 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKtrunk\r\n"
                f"From: <sip:{TO}@127.0.0.1>;tag=far\r\nTo: <sip:{FROM}@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 5 {method}\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            provider.local_address,
        )
        return parse(await receive(silent_trunk, skip=b"INVITE "))

    unknown = await ask("BYE", "no-such-call")
    assert (unknown.status, unknown.cseq, unknown.branch) == (481, (5, "BYE"), "z9hG4bKtrunk")
    # A BYE for a call that is still ringing has no dialog to end: 481, and it rings on.
    assert (await ask("BYE", ringing_call_id)).status == 481
    assert (await provider.lookup("att_sip")).status == "live"
    assert (await ask("OPTIONS", "keepalive")).status == 200


async def receive(trunk: socket.socket, *, skip: bytes = b"\x00") -> bytes:
    """The next datagram the trunk receives (retransmitted INVITEs skipped when asked)."""
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(trunk, 65535), 2.0)
        if not data.startswith(skip):
            return data


async def test_lookup_never_claims_an_unseen_attempt_was_not_received(
    make_provider: MakeProvider,
) -> None:
    provider = make_provider("sip:127.0.0.1:5060")
    assert (await provider.lookup("att_other_process")).status == "unknown"


async def test_a_trunk_whose_name_does_not_resolve_never_received_the_attempt(
    make_provider: MakeProvider,
) -> None:
    provider = make_provider("sip:trunk.invalid:5060")
    with pytest.raises(CarrierUnreachable, match=r"trunk\.invalid:5060 cannot be reached"):
        await provider.place(request("att_unsent"))
    assert (await provider.lookup("att_unsent")).status == "never_received"


# --- outcomes, configuration ------------------------------------------------------------------


def test_487_is_no_answer_only_after_our_cancel() -> None:
    assert outcome_of(487, canceled=True) == "no_answer"
    assert outcome_of(487, canceled=False) == "carrier_error"


@pytest.mark.parametrize(
    ("uri", "trunk"),
    [
        ("sip:trunk.example.com", Trunk("trunk.example.com", 5060)),
        ("sip:10.0.0.5:5080", Trunk("10.0.0.5", 5080)),
        ("SIP:carrier@10.0.0.5:5070;transport=udp", Trunk("10.0.0.5", 5070)),
        ("sip:[2001:db8::1]:5062", Trunk("2001:db8::1", 5062)),
    ],
)
def test_trunk_uris(uri: str, trunk: Trunk) -> None:
    assert Trunk.parse(uri) == trunk


@pytest.mark.parametrize(
    "uri",
    ["trunk.example.com:5060", "sip:", "sip:host:port", "sip:host:70000", "sip:h;transport=tcp"],
)
def test_bad_trunk_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="OUTDIAL_SIP_TRUNK"):
        Trunk.parse(uri)


async def test_registry_builds_the_sip_provider_and_refuses_it_without_a_trunk(
    recorder: Recorder,
) -> None:
    with pytest.raises(ValueError, match="OUTDIAL_SIP_TRUNK"):
        create_provider(Settings(telephony_provider="sip"), recorder)
    provider = create_provider(
        Settings(
            telephony_provider="sip",
            sip_trunk="sip:127.0.0.1:5070",
            sip_username=USERNAME,
            sip_password=SecretStr(PASSWORD),
        ),
        recorder,
    )
    assert isinstance(provider, SipProvider) and provider.trunk == Trunk("127.0.0.1", 5070)
    assert PASSWORD not in repr(Settings(sip_password=SecretStr(PASSWORD)))


# --- the wire format --------------------------------------------------------------------------


def test_parse_reads_compact_folded_and_listed_headers() -> None:
    message = parse(
        b"\r\nSIP/2.0 180 Ringing\r\n"
        b"v: SIP/2.0/UDP a.example:5060;branch=z9hG4bKone, "
        b"SIP/2.0/UDP b.example;branch=z9hG4bKtwo\r\n"
        b"Record-Route: <sip:p1.example;lr>,\r\n <sip:p2.example;lr>\r\n"
        b'f: "Caller, Inc" <sip:+1555@a.example>;tag=abc\r\n'
        b"t: <sip:+1666@b.example;user=phone>;tag=xyz\r\n"
        b"i: call-1\r\nCSeq: 7 INVITE\r\nl: 4\r\n\r\nbodyEXTRA"
    )
    assert (message.status, message.reason, message.is_request) == (180, "Ringing", False)
    assert message.branch == "z9hG4bKone"
    assert len(message.values("Via")) == 2
    assert message.values("Record-Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert param(message.header("From") or "", "tag") == "abc"
    assert param(message.header("To") or "", "tag") == "xyz"
    assert param("<sip:x@y;tag=uri-param>", "tag") is None
    assert uri_of(message.header("To") or "") == "sip:+1666@b.example;user=phone"
    assert (message.call_id, message.cseq, message.body) == ("call-1", (7, "INVITE"), b"body")


@pytest.mark.parametrize(
    "data", [b"HTTP/1.1 200 OK\r\n\r\n", b"\r\n\r\n", b"SIP/2.0 200 OK\r\nnocolon\r\n\r\n"]
)
def test_parse_refuses_what_is_not_sip(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse(data)


def test_encode_then_parse_round_trips_with_content_length() -> None:
    original = parse(
        b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 2 BYE\r\nContent-Length: 99\r\n\r\n"
    )
    encoded = original.encode()
    assert encoded.endswith(b"Content-Length: 0\r\n\r\n")
    again = parse(encoded)
    assert (again.method, again.uri, again.cseq) == ("BYE", "sip:a@b", (2, "BYE"))


# --- digest credentials -----------------------------------------------------------------------


def test_digest_response_matches_the_rfc_2617_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = digest_credentials(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth," in value and "nc=00000001" in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_digest_without_qop_and_with_sha_256() -> None:
    plain = Challenge(realm="r", nonce="n")
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:x@y").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    value = digest_credentials(
        plain, method="INVITE", uri="sip:x@y", username="u", password="p", cnonce="c"
    )
    assert f'response="{expected}"' in value and "qop" not in value
    sha = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256')
    ha1 = hashlib.sha256(b"u:r:p").hexdigest()
    ha2 = hashlib.sha256(b"INVITE:sip:x@y").hexdigest()
    expected = hashlib.sha256(f"{ha1}:n:{ha2}".encode()).hexdigest()
    value = digest_credentials(
        sha, method="INVITE", uri="sip:x@y", username="u", password="p", cnonce="c"
    )
    assert f'response="{expected}"' in value and "algorithm=SHA-256" in value


@pytest.mark.parametrize(
    "header",
    [
        'Basic realm="r"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", qop="auth-int"',
    ],
)
def test_challenges_we_cannot_answer_are_refused(header: str) -> None:
    with pytest.raises(UnsupportedChallenge):
        parse_challenge(header)
