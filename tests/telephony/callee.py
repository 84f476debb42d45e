"""A callee that speaks real audio: sipp answering with an SDP that names a UDP socket of the
test's own (so the test hears what outdial sends the callee), then playing pcaps of RTP from
Debian's sip-tester (`g711a.pcap`: A-law speech; `dtmf_2833_*.pcap`: RFC 4733 key presses),
or pcaps derived from them (cut short, packets swapped or repeated, re-encoded as μ-law)."""

import asyncio
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outdial.telephony.media.g711 import ALAW_TO_ULAW
from outdial.telephony.media.rtp import RtpPacket, parse_rtp

PCAPS = Path("/usr/share/sip-tester")
SPEECH = PCAPS / "g711a.pcap"
_RECORD = struct.Struct("<IIII")
_ETHERNET = 14


def dtmf_pcap(key: str) -> Path:
    name = {"*": "star", "#": "pound"}.get(key, key)
    return PCAPS / f"dtmf_2833_{name}.pcap"


@dataclass
class Pcap:
    """A pcap file of Ethernet/IPv4/UDP/RTP packets, as (seconds, frame) records."""

    header: bytes
    records: list[tuple[float, bytes]]

    @classmethod
    def read(cls, path: Path) -> "Pcap":
        data = path.read_bytes()
        records, offset = [], 24
        while offset < len(data):
            seconds, micros, length, _ = _RECORD.unpack_from(data, offset)
            offset += _RECORD.size
            records.append((seconds + micros / 1e6, data[offset : offset + length]))
            offset += length
        return cls(data[:24], records)

    def write(self, path: Path) -> Path:
        parts = [self.header]
        for at, frame in self.records:
            seconds = int(at)
            micros = round((at - seconds) * 1e6)
            parts += [_RECORD.pack(seconds, micros, len(frame), len(frame)), frame]
        path.write_bytes(b"".join(parts))
        return path

    @staticmethod
    def _rtp_offset(frame: bytes) -> int:
        return _ETHERNET + 4 * (frame[_ETHERNET] & 0x0F) + 8

    def rtp(self) -> list[RtpPacket]:
        """The RTP packets, in file order."""
        packets = [parse_rtp(frame[self._rtp_offset(frame) :]) for _, frame in self.records]
        assert all(p is not None for p in packets)
        return packets  # type: ignore[return-value]

    @property
    def seconds(self) -> float:
        return self.records[-1][0] - self.records[0][0]

    def first(self, count: int) -> "Pcap":
        return Pcap(self.header, self.records[:count])

    def with_frames(self, order: Sequence[int]) -> "Pcap":
        """The packets in `order` (indexes; repeats allowed), sent at the original instants:
        swapping two indexes delivers them out of order, repeating one duplicates it."""
        times = [at for at, _ in self.records]
        times += [times[-1] + 0.001 * n for n in range(1, len(order) - len(times) + 1)]
        return Pcap(self.header, [(times[i], self.records[n][1]) for i, n in enumerate(order)])

    def as_ulaw(self) -> "Pcap":
        """The same speech re-encoded as μ-law (payload type 0)."""
        records = []
        for at, frame in self.records:
            start = self._rtp_offset(frame)
            rtp = bytearray(frame[start:])
            rtp[1] = (rtp[1] & 0x80) | 0
            rtp[12:] = bytes(rtp[12:]).translate(ALAW_TO_ULAW)
            udp = bytearray(frame[:start])
            udp[-2:] = b"\x00\x00"  # no UDP checksum (IPv4 allows it): the payload changed
            records.append((at, bytes(udp) + bytes(rtp)))
        return Pcap(self.header, records)


_INVITE_WE_ANSWER_AND_END = """\
  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp="sip:[^&gt;;]*" search_in="hdr" header="From:" assign_to="caller" />
    </action>
  </recv>
"""
_INVITE = """\
  <recv request="INVITE" />
"""
_ANSWER = """\
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {media_port} RTP/AVP {payload_type} 101
      a=rtpmap:{payload_type} {codec}/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>
  <recv request="ACK" />
"""
_PLAY = """\
  <nop><action><exec play_pcap_audio="{pcap}" /></action></nop>
  <pause milliseconds="{ms}" />
"""
_WE_HANG_UP = """\
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <[$caller]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true" />
"""
_THEY_HANG_UP = """\
  <recv request="BYE" timeout="{timeout_ms}" />
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


def callee_scenario(
    out: Path,
    *,
    media_port: int,
    payload_type: int = 8,
    plays: Sequence[Path] = (),
    hang_up: bool = True,
    wait_for_bye_ms: int = 15_000,
) -> Path:
    """A sipp UAS scenario: answer naming 127.0.0.1:`media_port` for audio in PCMA (8), PCMU
    (0) or G.729 (18, which outdial cannot relay), play each pcap in turn, then hang up (BYE)
    or wait for outdial's BYE."""
    codec = {0: "PCMU", 8: "PCMA", 18: "G729"}[payload_type]
    body = _INVITE_WE_ANSWER_AND_END if hang_up else _INVITE
    body += _ANSWER.format(media_port=media_port, payload_type=payload_type, codec=codec)
    for pcap in plays:
        ms = round(Pcap.read(pcap).seconds * 1000) + 150
        body += _PLAY.format(pcap=pcap, ms=ms)
    body += _WE_HANG_UP if hang_up else _THEY_HANG_UP.format(timeout_ms=wait_for_bye_ms)
    out.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="callee">\n{body}</scenario>\n'
    )
    return out


@dataclass
class Ear:
    """The callee's RTP socket: records every packet outdial sends it, with its arrival."""

    sock: socket.socket
    packets: list[tuple[float, RtpPacket]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class _EarProtocol(asyncio.DatagramProtocol):
    def __init__(self, ear: Ear) -> None:
        self.ear = ear

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parse_rtp(data)
        if packet is not None:
            self.ear.packets.append((asyncio.get_running_loop().time(), packet))


async def open_ear() -> tuple[Ear, asyncio.DatagramTransport]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ear = Ear(sock)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _EarProtocol(ear), sock=sock
    )
    return ear, transport
