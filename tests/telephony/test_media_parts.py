"""The media path's parts on their own: G.711 tables, RTP parsing and ordering, RFC 4733 key
presses, 20 ms framing, SDP answers, the agent's playout queue and the shared packet clock."""

import asyncio
import importlib
import warnings

import pytest

from outdial.telephony.media import g711
from outdial.telephony.media.clock import PacketClock
from outdial.telephony.media.playout import Playout
from outdial.telephony.media.rtp import (
    REORDER_DEPTH,
    Framer,
    KeyPresses,
    RtpPacket,
    RtpReceiver,
    parse_plain,
    parse_rtp,
    rtp_packet,
)
from outdial.telephony.media.sdp import MediaAnswer, parse_answer, sdp_offer

# --- G.711 -------------------------------------------------------------------------------------


def test_g711_tables_match_the_reference_codec() -> None:
    """Where Python still ships `audioop` (the reference G.711 of CPython, gone in 3.13), every
    code and every 16-bit sample converts exactly as it does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ModuleNotFoundError:
            pytest.skip("no audioop in this Python (3.13+)")
    codes = bytes(range(256))
    assert codes.translate(g711.ALAW_TO_ULAW) == audioop.lin2ulaw(audioop.alaw2lin(codes, 2), 2)
    assert codes.translate(g711.ULAW_TO_ALAW) == audioop.lin2alaw(audioop.ulaw2lin(codes, 2), 2)
    samples = range(-32768, 32768, 7)
    linear = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    assert bytes(g711.linear_to_ulaw(s) for s in samples) == audioop.lin2ulaw(linear, 2)
    assert bytes(g711.linear_to_alaw(s) for s in samples) == audioop.lin2alaw(linear, 2)


def test_g711_silence_and_round_trips() -> None:
    assert g711.ulaw_to_linear(g711.ULAW_SILENCE) == 0
    assert abs(g711.alaw_to_linear(g711.ALAW_SILENCE)) == 8
    assert g711.ULAW_TO_ALAW[g711.ULAW_SILENCE] == g711.ALAW_SILENCE
    for code in range(256):  # converted codes decode to nearly the same level
        level = g711.alaw_to_linear(code)
        assert abs(g711.ulaw_to_linear(g711.ALAW_TO_ULAW[code]) - level) <= max(64, abs(level) / 16)


# --- RTP ---------------------------------------------------------------------------------------


def packet(sequence: int, *, ssrc: int = 1, payload: bytes = b"x", pt: int = 0) -> RtpPacket:
    return RtpPacket(pt, sequence % 65536, sequence * 160, ssrc, payload)


def test_parse_rtp_reads_headers_and_skips_what_is_not_audio() -> None:
    frame = bytes(range(160))
    written = rtp_packet(8, 65535, 2**32 - 1, 0xDEADBEEF, frame, marker=True)
    assert parse_rtp(written) == RtpPacket(8, 65535, 2**32 - 1, 0xDEADBEEF, frame, True)
    assert parse_plain(written, 8) == (65535, 2**32 - 1, 0xDEADBEEF)
    assert parse_plain(written, 0) is None  # another payload type: parse_rtp's to read
    header = written[:12]
    parsed = parse_rtp(header + b"abc")
    assert parsed == RtpPacket(8, 65535, 2**32 - 1, 0xDEADBEEF, b"abc", True)
    wrapped = rtp_packet(0, 65536, 2**32, 1, frame, marker=False)
    assert wrapped[1:8] == b"\x00\x00\x00\x00\x00\x00\x00"  # no marker; both wrap
    # two CSRCs, a one-word header extension and 2 bytes of padding around "pay"
    first = bytes([0x80 | 0x20 | 0x10 | 2])
    raw = (
        first
        + header[1:]
        + b"\x00\x00\x00\x01" * 2
        + b"\xbe\xde\x00\x01"
        + b"\x01\x02\x03\x04"
        + b"pay"
        + b"\x00\x02"
    )
    assert parse_rtp(raw).payload == b"pay"  # type: ignore[union-attr]
    assert parse_rtp(b"\x80\x00") is None  # too short
    assert parse_rtp(b"\x40" + header[1:]) is None  # version 1
    assert parse_rtp(b"\x80\xc8" + header[2:]) is None  # RTCP sender report (PT 200)
    assert parse_rtp(first + header[1:12]) is None  # claims CSRCs it does not have


def received(pushed: list[RtpPacket]) -> tuple[list[int], RtpReceiver]:
    out: list[RtpPacket] = []
    receiver = RtpReceiver(out.append)
    for p in pushed:
        receiver.push(p)
    return [p.sequence for p in out], receiver


def test_receiver_orders_and_drops_repeats_and_late_packets() -> None:
    order, receiver = received([packet(n) for n in (1, 2, 4, 3, 3, 5, 2, 6)])
    assert order == [1, 2, 3, 4, 5, 6]
    assert (receiver.dropped, receiver.lost) == (2, 0)


def test_receiver_gives_up_on_a_lost_packet_after_the_reorder_depth() -> None:
    later = [packet(n) for n in range(12, 12 + REORDER_DEPTH)]
    order, receiver = received([packet(10), *later])
    assert order == [10] and receiver.waiting  # still waiting for 11
    receiver.push(packet(12 + REORDER_DEPTH))
    assert receiver.lost == 1 and not receiver.waiting
    order, receiver = received([packet(10), packet(12), packet(13)])
    receiver.skip_gap()  # the clock's timer gives up on 11 as well
    assert receiver.lost == 1 and not receiver.waiting


def test_receiver_crosses_the_sequence_wrap_and_restarts_on_a_new_source() -> None:
    order, _ = received([packet(n) for n in (65534, 0, 65535, 1)])
    assert order == [65534, 65535, 0, 1]
    order, _ = received([packet(7), packet(8), packet(500, ssrc=2), packet(501, ssrc=2)])
    assert order == [7, 8, 500, 501]
    order, _ = received([packet(7), packet(40_000), packet(40_001)])  # a far jump: restarted
    assert order == [7, 40_000, 40_001]


def test_key_presses_count_once_per_timestamp() -> None:
    keys = KeyPresses()

    def event(key: int, timestamp: int, end: bool = False) -> RtpPacket:
        return RtpPacket(101, 0, timestamp, 1, bytes([key, 0x8A if end else 0x0A, 0, 160]))

    found = [
        keys.key_of(event(5, 800)),
        keys.key_of(event(5, 800)),
        keys.key_of(event(5, 800, end=True)),
        keys.key_of(event(5, 800, end=True)),
        keys.key_of(event(5, 1600)),  # the same key pressed again
        keys.key_of(event(11, 2400, end=True)),  # only its end arrived
        keys.key_of(event(16, 3200)),  # flash: not a key
        keys.key_of(RtpPacket(101, 0, 4000, 1, b"\x01")),  # too short
    ]
    assert found == ["5", None, None, None, "5", "#", None, None]


def test_framer_cuts_20_ms_frames_with_their_timestamps() -> None:
    frames: list[tuple[bytes, int]] = []
    framer = Framer(lambda audio, ts: frames.append((audio, ts)))
    framer.push(b"a" * 240, 1000)  # 30 ms packets
    framer.push(b"b" * 240, 1240)
    framer.push(b"c" * 100, 1480)
    assert [(len(a), ts) for a, ts in frames] == [(160, 1000), (160, 1160), (160, 1320)]
    assert b"".join(a for a, _ in frames) == b"a" * 240 + b"b" * 240
    framer.flush()
    assert frames[-1] == (b"c" * 100, 1480)


# --- SDP ---------------------------------------------------------------------------------------


def test_the_offer_names_our_port_and_codecs() -> None:
    offer = sdp_offer("192.0.2.7", 40_000).decode()
    assert "c=IN IP4 192.0.2.7" in offer and "m=audio 40000 RTP/AVP 0 8 101" in offer
    assert "a=rtpmap:101 telephone-event/8000" in offer
    assert "c=IN IP6 ::1" in sdp_offer("::1", 4).decode()


@pytest.mark.parametrize(
    ("sdp", "answer"),
    [
        (
            "v=0\r\nc=IN IP4 198.51.100.2\r\nm=audio 5004 RTP/AVP 8 101\r\n"
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            MediaAnswer(("198.51.100.2", 5004), 8, 101),
        ),
        (  # the media's own c= wins; the answer's own event payload type
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 7000 RTP/AVP 0 96\nc=IN IP4 198.51.100.3\n"
            "a=rtpmap:96 telephone-event/8000\n",
            MediaAnswer(("198.51.100.3", 7000), 0, 96),
        ),
        (  # no telephone-event, and codecs we do not speak listed first
            "c=IN IP4 198.51.100.4\nm=audio 7002 RTP/AVP 18 9 0\n",
            MediaAnswer(("198.51.100.4", 7002), 0, None),
        ),
        ("c=IN IP4 198.51.100.4\nm=audio 0 RTP/AVP 0\n", None),  # audio refused
        ("c=IN IP4 198.51.100.4\nm=audio 7002 RTP/AVP 18\n", None),  # G.729 only
        ("c=IN IP4 198.51.100.4\nm=video 7002 RTP/AVP 96\n", None),  # no audio
        ("m=audio 7002 RTP/AVP 0\n", None),  # no address
        ("", None),
    ],
)
def test_parse_answer(sdp: str, answer: MediaAnswer | None) -> None:
    assert parse_answer(sdp.encode()) == answer


# --- the agent's playout -----------------------------------------------------------------------


def test_playout_plays_20_ms_at_a_time_and_echoes_marks_after_their_audio() -> None:
    marks: list[str] = []
    playout = Playout(marks.append)
    playout.add_mark("empty")  # nothing before it: echoed at the next frame
    assert playout.next_frame() is None
    playout.echo_played_marks()
    assert marks == ["empty"]
    playout.add_audio(b"a" * 250)
    playout.add_mark("m1")
    playout.add_audio(b"b" * 100)
    assert playout.next_frame() == b"a" * 160
    playout.echo_played_marks()
    assert marks == ["empty"]
    assert playout.next_frame() == b"a" * 90 + b"b" * 70
    playout.echo_played_marks()
    assert marks == ["empty", "m1"]
    # 30 bytes left; audio arrived since the last tick, so it waits one tick for more
    playout.add_audio(b"c" * 10)
    assert playout.next_frame() is None
    assert playout.next_frame() == b"b" * 30 + b"c" * 10 + b"\xff" * 120
    assert playout.waiting == 0 and playout.next_frame() is None


def test_clear_drops_the_queue_and_echoes_its_marks() -> None:
    marks: list[str] = []
    playout = Playout(marks.append)
    playout.add_audio(b"a" * 1600)
    playout.add_mark("one")
    playout.add_audio(b"b" * 1600)
    playout.add_mark("two")
    assert playout.next_frame() == b"a" * 160
    playout.clear()
    assert marks == ["one", "two"] and playout.waiting == 0
    playout.add_audio(b"c" * 160)
    playout.add_mark("three")
    assert playout.next_frame() == b"c" * 160
    playout.echo_played_marks()
    assert marks == ["one", "two", "three"]


# --- the packet clock --------------------------------------------------------------------------


async def test_one_clock_ticks_every_subscriber_every_20_ms() -> None:
    clock = PacketClock.of_running_loop()
    assert PacketClock.of_running_loop() is clock
    loop = asyncio.get_running_loop()
    ticks: dict[str, list[float]] = {"a": [], "b": []}
    clock.subscribe("a", lambda: ticks["a"].append(loop.time()))
    clock.subscribe("b", lambda: ticks["b"].append(loop.time()))
    await asyncio.sleep(0.5)
    clock.unsubscribe("a")
    clock.unsubscribe("b")
    assert clock.subscribers == 0
    for times in ticks.values():
        assert 20 <= len(times) <= 26, len(times)  # 25 on an idle machine
    stopped = len(ticks["a"])
    await asyncio.sleep(0.05)
    assert len(ticks["a"]) == stopped


async def test_a_failing_tick_is_dropped_and_the_others_go_on() -> None:
    clock = PacketClock.of_running_loop()
    ticks: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    clock.subscribe("broken", broken)
    clock.subscribe("fine", lambda: ticks.append(1))
    await asyncio.sleep(0.1)
    clock.unsubscribe("fine")
    assert clock.subscribers == 0 and len(ticks) >= 3


async def test_live_streams_are_counted_until_they_finish() -> None:
    from outdial.telephony.base import StreamTarget
    from outdial.telephony.media.agent import AgentStream

    before = AgentStream.live
    target = StreamTarget(
        url="ws://127.0.0.1:9/nobody",
        secret="whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0",
        call_id="c",
        participant_id="p",
        attempt_id="a",
        agent_id="g",
        to="+15551230001",
        from_number="+15559990000",
    )
    ended = asyncio.Event()
    stream = AgentStream(target, answered_by="human", on_end=lambda _: ended.set())
    stream.start()
    assert AgentStream.live == before + 1
    await asyncio.wait_for(ended.wait(), 2)  # nobody listens on port 9: unavailable at once
    assert AgentStream.live == before
    stream.stop()  # stopping a finished stream changes nothing
    assert AgentStream.live == before
