"""The `sip` provider's media relay end to end, with real parts only: sipp as the callee playing
Debian's recorded RTP (A-law speech, RFC 4733 key presses), a real WebSocket agent
(tests/telephony/agent_peer.py) and a UDP socket of the test's own as the callee's ear."""

import asyncio
import base64
import itertools
import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from outdial.telephony.base import CallEvent, DialRequest, StreamTarget
from outdial.telephony.media.g711 import ALAW_SILENCE, ALAW_TO_ULAW, ULAW_TO_ALAW
from outdial.telephony.sip import SipProvider, Trunk
from tests.telephony.agent_peer import AgentCall, agent_peer, greet
from tests.telephony.callee import SPEECH, Ear, Pcap, callee_scenario, dtmf_pcap, open_ear
from tests.telephony.sipp_peer import Sipp, sipp
from tests.telephony.test_simulated import Recorder

FROM = "+15559990000"
TO = "+15551230001"
ATTEMPT = "att_media"


@dataclass
class Call:
    provider: SipProvider
    recorder: Recorder
    peer: Sipp
    ear: Ear

    async def answered(self) -> CallEvent:
        return await self.recorder.wait_for(ATTEMPT, "answered", 10)

    async def ended(self, within: float = 15) -> CallEvent:
        return await self.recorder.wait_for(ATTEMPT, "ended", within)

    async def sipp_passed(self) -> None:
        code = await self.peer.exit_code()
        assert code == 0, f"sipp exited {code}:\n{self.peer.errors()}"


@asynccontextmanager
async def sip_call(
    tmp_path: Path, target: StreamTarget, *, payload_type: int = 8, **scenario: object
) -> AsyncIterator[Call]:
    """Dial through sipp answering with this scenario; yields once the INVITE is out."""
    ear, ear_transport = await open_ear()
    path = callee_scenario(
        tmp_path / "callee.xml", media_port=ear.port, payload_type=payload_type, **scenario
    )
    recorder = Recorder()
    try:
        async with sipp(path, tmp_path) as peer:
            provider = SipProvider(recorder, trunk=Trunk.parse(peer.trunk))
            try:
                await provider.place(
                    DialRequest(ATTEMPT, TO, FROM, ring_timeout_seconds=15, stream=target)
                )
                yield Call(provider, recorder, peer, ear)
            finally:
                await provider.aclose()
    finally:
        ear_transport.close()


def speech(count: int) -> Pcap:
    """The first `count` packets of the recorded speech (30 ms each)."""
    return Pcap.read(SPEECH).first(count)


def pattern(frames: int) -> bytes:
    """μ-law audio that is not silence and differs frame to frame: easy to find again."""
    return bytes((n * 7 + n // 160) % 0x7F for n in range(frames * 160))


def ear_audio(ear: Ear) -> list[tuple[float, bytes]]:
    """The packets the callee heard that are not silence: (arrival, A-law payload)."""
    silence = bytes([ALAW_SILENCE]) * 160
    return [(at, p.payload) for at, p in ear.packets if p.payload != silence]


# --- the callee's side reaches the agent ---------------------------------------------------


@pytest.mark.parametrize("payload_type", [8, 0], ids=["pcma", "pcmu"])
async def test_callee_audio_reaches_the_agent_in_order_once(tmp_path, payload_type) -> None:
    """The callee's speech, with two packets swapped and one repeated on the wire, reaches the
    agent as 20 ms μ-law frames equal to the recording (converted from A-law), in order, none
    lost, none twice; then the callee hangs up: the agent hears `stop`, the socket closes."""
    recording = speech(40)
    order = [*range(10), 11, 10, *range(12, 21), 20, *range(21, 40)]
    sent = recording.with_frames(order)
    if payload_type == 0:
        sent = sent.as_ulaw()
    pcap = sent.write(tmp_path / "speech.pcap")
    expected = b"".join(p.payload for p in recording.rtp()).translate(ALAW_TO_ULAW)

    async with agent_peer() as agent:
        target = agent.target(ATTEMPT)
        async with sip_call(tmp_path, target, payload_type=payload_type, plays=[pcap]) as call:
            answered = await call.answered()
            stream = await agent.next_call()
            end = await call.ended()
            await call.sipp_passed()
            await stream.wait_for(lambda c: c.closed.is_set())

    assert (end.end_reason, answered.machine) == ("answered", False)
    assert stream.signature_valid and stream.path == "/agent"
    assert stream.events[:2] == ["connected", "start"] and stream.events[-1] == "stop"
    assert set(stream.events[2:-1]) == {"media"}
    assert stream.messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = stream.start
    sid = start["streamSid"]
    assert start["start"] == {
        "streamSid": sid,
        "callSid": "participant_1",
        "tracks": ["inbound"],
        "customParameters": {
            "call_id": "call_1",
            "participant_id": "participant_1",
            "attempt_id": ATTEMPT,
            "agent_id": target.agent_id,
            "to": TO,
            "from": FROM,
            "answered_by": "unknown",  # a SIP trunk does no machine detection
            "batch_id": "batch_1",
            "variables": '{"first_name":"Ada","plan":"gold"}',
        },
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    assert stream.audio() == expected
    media = stream.of("media")
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media[:-1])
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, len(media) + 1)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * n) for n in range(len(media))]
    assert {m["media"]["track"] for m in media} == {"inbound"}
    assert {m["streamSid"] for m in stream.messages[1:]} == {sid}
    sequence = [int(m["sequenceNumber"]) for m in stream.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    assert stream.of("stop")[0]["stop"] == {"callSid": "participant_1"}


async def test_key_presses_reach_the_agent_once_each(tmp_path) -> None:
    """Each recorded key press is ten packets (its end three times): one `dtmf` each."""
    keys = ["1", "5", "9", "*", "#"]
    async with agent_peer() as agent:
        plays = [dtmf_pcap(key) for key in keys]
        async with sip_call(tmp_path, agent.target(ATTEMPT), plays=plays) as call:
            stream = await agent.next_call()
            await call.ended()
            await call.sipp_passed()
    dtmf = stream.of("dtmf")
    assert [m["dtmf"]["digit"] for m in dtmf] == keys
    assert {m["dtmf"]["track"] for m in dtmf} == {"inbound_track"}


# --- the agent's side reaches the callee ---------------------------------------------------


def speaking(audio: bytes, *, chunk: int, then: Callable[[AgentCall], object] | None = None):
    """An agent that, once the stream starts, sends `audio` at once in `chunk`-byte pieces,
    then a mark "spoken"."""

    async def script(call: AgentCall) -> None:
        await call.wait_for_event("start")
        for at in range(0, len(audio), chunk):
            await call.send_audio(audio[at : at + chunk])
        await call.send({"event": "mark", "streamSid": "x", "mark": {"name": "spoken"}})

    return script


async def test_agent_audio_reaches_the_callee_paced_and_re_encoded(tmp_path) -> None:
    """One second of the agent's audio, sent in one burst of odd-sized pieces, reaches the
    callee as 50 A-law packets (the codec the callee chose), 20 ms apart, none lost; the mark
    after it comes back once all of it has been sent."""
    audio = pattern(50)
    async with agent_peer(speaking(audio, chunk=100)) as agent:
        async with sip_call(tmp_path, agent.target(ATTEMPT), hang_up=False) as call:
            stream = await agent.next_call()
            await stream.wait_for_event("mark", within=5)
            await asyncio.sleep(0.1)
            await call.provider.hangup(ATTEMPT)
            end = await call.ended()
            await call.sipp_passed()

    packets = [p for _, p in call.ear.packets]
    assert {p.payload_type for p in packets} == {8}
    assert len({p.ssrc for p in packets}) == 1
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(len(packets)))
    assert [p.timestamp - packets[0].timestamp for p in packets] == [
        160 * n for n in range(len(packets))
    ]
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    heard = ear_audio(call.ear)
    assert b"".join(payload for _, payload in heard) == audio.translate(ULAW_TO_ALAW)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(heard)]
    assert heard[-1][0] - heard[0][0] >= 0.8, "sent in a burst, not paced"
    assert 0.015 <= statistics.median(gaps) <= 0.025
    mark_at = stream.received_at[stream.messages.index(stream.of("mark")[0])]
    assert mark_at >= heard[-1][0] - 0.01, "the mark came back before its audio was sent"
    assert stream.of("mark")[0]["mark"] == {"name": "spoken"}
    assert end.end_reason == "answered"
    assert stream.events[-1] == "stop"


async def test_clear_drops_the_audio_not_yet_played(tmp_path) -> None:
    """Barge-in: of five seconds sent at once, what was not played when `clear` came is
    dropped; marks queued behind it come back at once, and later audio plays."""
    queued = pattern(250)
    after = bytes([0x42]) * 160 * 5

    async def script(call: AgentCall) -> None:
        await call.wait_for_event("start")
        await call.send_audio(queued)
        await call.send({"event": "mark", "mark": {"name": "end-of-sentence"}})
        await asyncio.sleep(0.3)
        await call.send({"event": "clear", "streamSid": "x"})
        await call.send_audio(after)

    async with agent_peer(script) as agent:
        async with sip_call(tmp_path, agent.target(ATTEMPT), hang_up=False) as call:
            stream = await agent.next_call()
            await stream.wait_for_event("mark")
            await asyncio.sleep(0.4)
            await call.provider.hangup(ATTEMPT)
            await call.ended()
            await call.sipp_passed()

    # compared as A-law, the codec the callee chose (μ-law → A-law → μ-law is not lossless)
    heard = b"".join(payload for _, payload in ear_audio(call.ear))
    after_alaw = after.translate(ULAW_TO_ALAW)
    played = heard[: heard.index(after_alaw)]
    assert 5 * 160 <= len(played) <= 40 * 160, len(played) / 160
    assert queued.translate(ULAW_TO_ALAW).startswith(played)
    assert heard[len(played) :] == after_alaw
    [mark] = stream.of("mark")
    assert mark["mark"]["name"] == "end-of-sentence"


# --- who hangs up ----------------------------------------------------------------------------


async def test_the_agent_closing_its_socket_hangs_up(tmp_path) -> None:
    async def script(call: AgentCall) -> None:
        await greet(call)
        await asyncio.sleep(0.3)
        await call.ws.close()

    async with agent_peer(script) as agent:
        async with sip_call(tmp_path, agent.target(ATTEMPT), hang_up=False) as call:
            answered = await call.answered()
            end = await call.ended()
            await call.sipp_passed()  # it got our BYE
    assert end.end_reason == "answered"
    assert 0.3 <= (end.at - answered.at).total_seconds() < 1.5


async def test_an_agent_that_cannot_be_reached_is_abandoned(tmp_path) -> None:
    async with agent_peer() as agent:
        unreachable = agent.target(ATTEMPT, url="ws://127.0.0.1:9/agent")
        async with sip_call(tmp_path, unreachable, hang_up=False) as call:
            answered = await call.answered()
            end = await call.ended()
            await call.sipp_passed()
    assert end.end_reason == "agent_unavailable"
    assert (end.at - answered.at).total_seconds() < 2.5


async def test_an_agent_that_says_nothing_is_abandoned_after_2_s(tmp_path) -> None:
    async def silent(call: AgentCall) -> None:
        await call.wait_for_event("start")

    async with agent_peer(silent) as agent:
        async with sip_call(tmp_path, agent.target(ATTEMPT), hang_up=False) as call:
            answered = await call.answered()
            stream = await agent.next_call()
            end = await call.ended()
            await call.sipp_passed()
            await stream.wait_for(lambda c: c.closed.is_set())
    assert end.end_reason == "agent_unavailable"
    assert 1.9 <= (end.at - answered.at).total_seconds() < 2.5
    assert stream.events[-1] == "stop"


async def test_malformed_frames_from_the_agent_are_ignored(tmp_path, caplog) -> None:
    audio = pattern(5)

    async def script(call: AgentCall) -> None:
        await call.wait_for_event("start")
        for garbage in (
            "not json",
            '{"event": "media", "media": {"payload": "!!not base64!!"}}',
            '{"event": "media"}',
            '{"event": "dance"}',
            "[1, 2]",
            b"\x00\x01binary",
        ):
            await call.send(garbage)
        await call.send_audio(audio)

    async with agent_peer(script) as agent:
        async with sip_call(tmp_path, agent.target(ATTEMPT), hang_up=False) as call:
            await agent.next_call()
            await asyncio.sleep(0.6)
            assert call.recorder.ended(ATTEMPT) is None, "a bad frame ended the call"
            await call.provider.hangup(ATTEMPT)
            end = await call.ended()
            await call.sipp_passed()
    assert end.end_reason == "answered"
    heard = b"".join(payload for _, payload in ear_audio(call.ear))
    assert heard == audio.translate(ULAW_TO_ALAW)
    assert "ignored" in caplog.text


async def test_an_answer_without_g711_is_hung_up_as_a_carrier_error(tmp_path) -> None:
    async with agent_peer() as agent:
        target = agent.target(ATTEMPT)
        async with sip_call(tmp_path, target, payload_type=18, hang_up=False) as call:
            await call.answered()
            end = await call.ended()
            await call.sipp_passed()  # it got our BYE
    assert end.end_reason == "carrier_error"
    assert agent.calls == []  # no stream without audio to carry
