"""Benchmark: how many bridged calls one process relays (the `sip` provider's media path).

For each N of a ladder: sipp answers N calls placed by one relay process (a `SipProvider`
with a stream on every call, placed at the rate without waiting for each other) and plays
Debian's recorded A-law speech (`g711a.pcap`) into each, over and over: with
`play_pcap_audio` (30 ms packets, a thread and a raw socket per call) or, with
`--callee-audio stream`, `rtp_stream` (20 ms packets from each call's own UDP socket). A local
echo agent (WebSocket) sends every frame it hears straight back; the relay sends that audio to
the callee's media address, a sink process that timestamps every packet in the kernel
(SO_TIMESTAMPNS). Over a steady window with all N calls up it measures:

- frames lost inbound (callee → agent): chunk gaps seen by the agent, and the relay's
  RTP receiver's own count; outbound (agent → callee): sequence gaps at the sink, and the
  sink socket's kernel drops;
- the spacing of consecutive packets of each call at the sink (p1, p50, p99, max);
- the relay process's CPU seconds per call-second, its packet clock's late ticks, its
  garbage collections, and the RTP packets per call-second it took in and sent.

Then the relay hangs every call up. N passes when every call lasted, nothing is lost either
way and the spacing's p1 and p99 lie within 20 ± 5 ms. The yardstick, measured in the same run
on the same loop: a trivial asyncio UDP echo server's datagrams per CPU-second (the most I/O a
Python event loop does with no work at all), against the relay's I/O events per CPU-second
(each call-second is 33 or 50 RTP packets in, 50 frames to the agent, 50 from it and 50 RTP
packets out: 183 or 200 events).

Run: `.venv/bin/python bench/media.py [--ladder 50,100,200,300,400,500,600]
[--loop asyncio|uvloop] [--window 10] [--rate 100] [--callee-audio pcap|stream]
[--nice N] [--realtime] [--relay-src OLD_TREE/src]` (needs sipp, and root for its pcap play
and --realtime). `--relay-src` runs another version of the relay under the same harness;
`--nice`/`--realtime` give the relay priority over the harness and whatever else runs.
"""

import argparse
import array
import asyncio
import gc
import itertools
import json
import math
import os
import queue
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PLAY_MS = 7080
"""g711a.pcap is 236 packets of 30 ms."""
EVENTS_PER_CALL_SECOND = {"pcap": 1000 / 30 + 50 + 50 + 50, "stream": 50 + 50 + 50 + 50}
"""RTP packets in, frames to the agent, frames from it, RTP packets out."""
HOST = "127.0.0.1"
RELAY_HOST = "127.0.0.3"
SINK_HOST = "127.0.0.2"
"""The relay's RTP and the callees' ears are on loopback addresses of their own. sipp plays
its pcap through a raw UDP socket per call, bound to sipp's address and never read: the
kernel offers a copy of every UDP datagram sent to that address to each of them (a cost per
packet that grows with the calls, taken in the sender's CPU time, 10 % of the relay's at 300
calls). No relay host in service has them. Other addresses spare the relay those copies,
not the walk over the sockets (still ~6 % at 300 calls): `--callee-audio stream` has none."""
SINK_POLL_SECONDS = 0.005
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: each datagram carries the kernel's receive time (a struct timespec)."""


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run `main` on the named event loop."""
    factory = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# --- the echo agent (a process of its own) -----------------------------------------------------


def run_agent(port: int, loop: str) -> None:
    """A WebSocket agent that echoes every media frame at once. `websockets` answers the
    handshake; the frames are split and written by hand (with the relay's own `wsframes`), so
    that the agent, which shares the machine, is not what limits the relay. It prints one
    JSON line per stream when the stream stops: frames, bytes and chunk gaps."""
    import base64

    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    from outdial.telephony.media.wsframes import apply_mask, frame_bounds

    chunk_field = re.compile(rb'"chunk":"(\d+)"')
    text_head = struct.Struct("!BBH")

    def text_frame(payload: bytes) -> bytes:  # a server's frames are not masked
        if len(payload) < 126:
            return bytes((0x81, len(payload))) + payload
        return text_head.pack(0x81, 126, len(payload)) + payload

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.ws: ServerProtocol | None = ServerProtocol(max_size=None)
            self.inbox = b""
            self.sid = b""
            self.attempt = ""
            self.frames = self.bytes = self.gaps = 0
            self.last_chunk = 0
            self.closing = False

        def data_received(self, data: bytes) -> None:
            buffer = self.inbox + data
            if self.ws is not None:  # the upgrade request
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    self.inbox = buffer
                    return
                self.ws.receive_data(buffer[: end + 4])
                for event in self.ws.events_received():
                    if isinstance(event, Request):
                        self.ws.send_response(self.ws.accept(event))
                self.transport.write(b"".join(self.ws.data_to_send()))
                self.ws, buffer = None, buffer[end + 4 :]
            out: list[bytes] = []
            start = 0
            while (bounds := frame_bounds(buffer, start)) is not None and bounds[1] <= len(buffer):
                payload_start, end = bounds
                opcode = buffer[start] & 0x0F
                if opcode == 1:
                    mask = buffer[payload_start - 4 : payload_start]
                    self.message(apply_mask(buffer[payload_start:end], mask), out)
                elif opcode == 8:  # close: the relay has hung up
                    self.closing = True
                    self.transport.close()
                start = end
            self.inbox = buffer[start:]
            if out and not self.closing:
                self.transport.write(b"".join(out))

        def message(self, data: bytes, out: list[bytes]) -> None:
            if data.startswith(b'{"event":"media"'):
                chunk = int(chunk_field.search(data).group(1))  # type: ignore[union-attr]
                self.gaps += chunk - self.last_chunk - 1
                self.last_chunk = chunk
                start = data.index(b'"payload":"') + 11
                payload = data[start : data.index(b'"', start)]
                self.frames += 1
                self.bytes += len(payload) * 3 // 4 - payload.count(b"=")
                out.append(
                    text_frame(
                        b'{"event":"media","streamSid":"'
                        + self.sid
                        + b'","media":{"payload":"'
                        + payload
                        + b'"}}'
                    )
                )
                return
            message = json.loads(data)
            if message["event"] == "start":
                self.sid = message["start"]["streamSid"].encode()
                self.attempt = message["start"]["customParameters"]["attempt_id"]
                # A greeting (20 ms of silence), as agents do, so that a slow callee does not
                # make the relay abandon the call before its audio reaches us to echo.
                out.append(
                    text_frame(
                        b'{"event":"media","streamSid":"'
                        + self.sid
                        + b'","media":{"payload":"'
                        + base64.b64encode(b"\xff" * 160)
                        + b'"}}'
                    )
                )
            elif message["event"] == "stop":
                self.closing = True
                _emit(
                    {
                        "attempt": self.attempt,
                        "frames": self.frames,
                        "bytes": self.bytes,
                        "gaps": self.gaps,
                    }
                )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, HOST, port, backlog=4096)
        _emit({"ready": True})
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    _run(main(), loop)


# --- the sink: the callees' ears ---------------------------------------------------------------


def run_sink(port: int) -> None:
    """Receive every packet the relay sends the callees; on a line "start end" on stdin,
    measure the packets that arrived in that window and print the figures as JSON."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((SINK_HOST, port))
    sock.setblocking(False)
    times = array.array("d")
    ssrcs = array.array("I")
    sequences = array.array("H")
    done = threading.Event()
    timestamp = struct.Struct("ll")

    def receive() -> None:
        # Read what has queued every few ms rather than wait on the socket: a waiting reader
        # makes each of the relay's sends wake it, a cost (in the relay's CPU time, on
        # loopback) that a callee across the network never puts on the relay's host. The
        # kernel's timestamps keep the arrival times exact.
        while not done.is_set():
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, 64)
            except BlockingIOError:
                time.sleep(SINK_POLL_SECONDS)
                continue
            if len(data) < 12:
                continue
            at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = timestamp.unpack(value[: timestamp.size])
                    at = seconds + nanos / 1e9
            sequence, _, ssrc = struct.unpack_from("!HII", data, 2)
            times.append(at)
            ssrcs.append(ssrc)
            sequences.append(sequence)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    _emit({"ready": True})
    start, end = map(float, sys.stdin.readline().split())
    done.set()
    thread.join()
    by_ssrc: dict[int, list[tuple[float, int]]] = {}
    for at, ssrc, sequence in zip(times, ssrcs, sequences, strict=True):
        if start <= at <= end:
            by_ssrc.setdefault(ssrc, []).append((at, sequence))
    spacing: list[float] = []
    lost = 0
    for packets in by_ssrc.values():
        for (a_at, a_seq), (b_at, b_seq) in itertools.pairwise(packets):
            spacing.append((b_at - a_at) * 1000)
            lost += max(0, (b_seq - a_seq) % 65536 - 1)
    spacing.sort()

    def pct(p: float) -> float:
        return spacing[min(len(spacing) - 1, int(p / 100 * len(spacing)))] if spacing else 0.0

    _emit(
        {
            "calls_heard": len(by_ssrc),
            "packets": sum(len(p) for p in by_ssrc.values()),
            "lost": lost,
            "kernel_drops": _udp_drops(port),
            "p1": pct(1),
            "p50": pct(50),
            "p99": pct(99),
            "max": spacing[-1] if spacing else 0.0,
            "outside_15_25": sum(1 for s in spacing if not 15 <= s <= 25) / max(1, len(spacing)),
        }
    )


def _udp_drops(port: int) -> int:
    """The kernel's count of datagrams dropped on our UDP socket (/proc/net/udp)."""
    wanted = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted):
            return int(fields[-1])
    return -1


# --- the relay under test -----------------------------------------------------------------------


def run_relay(args: argparse.Namespace) -> None:
    """Place N calls through sipp with a stream each, measure a steady window, report."""
    from outdial.signing import new_secret
    from outdial.telephony.base import CallEvent, DialRequest, StreamTarget
    from outdial.telephony.media.clock import PacketClock
    from outdial.telephony.sip import SipProvider, Trunk

    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.realtime:  # as media servers run (Asterisk -p, FreeSWITCH -rp)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))

    async def main() -> None:
        answered: set[str] = set()
        ends: dict[str, int] = {}
        all_answered = asyncio.Event()
        all_ended = asyncio.Event()

        async def events(event: CallEvent) -> None:
            if event.kind == "answered":
                answered.add(event.attempt_id)
                if len(answered) == args.calls:
                    all_answered.set()
            else:
                reason = event.end_reason or "?"
                ends[reason] = ends.get(reason, 0) + 1
                if sum(ends.values()) == args.calls:
                    all_ended.set()

        provider = SipProvider(events, trunk=Trunk(HOST, args.sipp_port), bind_host=RELAY_HOST)
        secret = new_secret()
        placing = time.monotonic()
        dials = []
        for n in range(args.calls):
            attempt = f"{args.run}-{n}"
            target = StreamTarget(
                url=args.agent_url,
                secret=secret,
                call_id=f"call-{n}",
                participant_id=f"participant-{n}",
                attempt_id=attempt,
                agent_id="bench",
                to=f"+1555{n:07d}",
                from_number="+15559990000",
            )
            # At the rate, each dial not waiting for the one before to be taken (as a dialer's
            # concurrent dials do): sipp answering slowly must not slow the ramp down.
            request = DialRequest(attempt, f"+1555{n:07d}", "+15559990000", 30, stream=target)
            dials.append(asyncio.create_task(provider.place(request)))
            # On an absolute schedule: a busy loop oversleeps, and the ramp must not stretch.
            await asyncio.sleep(placing + (n + 1) / args.rate - time.monotonic())
        await asyncio.gather(*dials)
        placed = time.monotonic() - placing
        try:
            await asyncio.wait_for(all_answered.wait(), 60)
        except TimeoutError:
            _emit({"error": f"only {len(answered)} of {args.calls} calls answered"})
        ramp = time.monotonic() - placing
        await asyncio.sleep(1.0)  # every stream open and speaking
        clock = PacketClock.of_running_loop()
        late_before, ticks_before = clock.late_ticks, clock.ticks
        gc_pauses: list[float] = []
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                gc_pauses.append((time.perf_counter() - gc_started[0]) * 1000)

        gc.callbacks.append(on_gc)
        profile = os.environ.get("BENCH_PROFILE")
        if profile:  # where the relay's time goes, for whoever tunes it (distorts the figures)
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        _emit({"window_starts": True})
        bridges = [c.media for c in provider._live.values() if c.media is not None]
        counts = sum(b.packets_in for b in bridges), sum(b.packets_out for b in bridges)
        cpu, wall = _cpu(), time.time()
        await asyncio.sleep(args.window)
        cpu, end = _cpu() - cpu, time.time()
        gc.callbacks.remove(on_gc)
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        counts = (
            sum(b.packets_in for b in bridges) - counts[0],
            sum(b.packets_out for b in bridges) - counts[1],
        )
        bridges = [c.media for c in provider._live.values() if c.media is not None]
        _emit(
            {
                "window": [wall, end],
                "cpu": cpu,
                "live": len(bridges),
                "late_ticks": clock.late_ticks - late_before,
                "ticks": clock.ticks - ticks_before,
                "rtp_lost": sum(b._receiver.lost for b in bridges),
                "rtp_dropped": sum(b._receiver.dropped for b in bridges),
                "packets_in_out": counts,
                "ramp_seconds": ramp,
                "placing_seconds": placed,
                "gc_collections": len(gc_pauses),
                "gc_max_ms": max(gc_pauses, default=0.0),
            }
        )
        # Measured: hang up every call still up (sipp's own BYE would only come once its audio
        # ran out; a call that ended before this is one that did not last, and is reported).
        for attempt in [a for a in answered if a in provider._live]:
            await provider.hangup(attempt)
        try:
            await asyncio.wait_for(all_ended.wait(), 60)
        except TimeoutError:
            pass
        _emit({"ends": ends})
        await provider.aclose()

    _run(main(), args.loop)


# --- the yardstick --------------------------------------------------------------------------------


def run_echo_server(port: int, loop: str) -> None:
    """A trivial asyncio UDP echo server; prints its CPU seconds and datagrams on SIGTERM."""

    class Echo(asyncio.DatagramProtocol):
        count = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            Echo.count += 1
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    async def main() -> None:
        loop_ = asyncio.get_running_loop()
        await loop_.create_datagram_endpoint(Echo, local_addr=(HOST, port))
        _emit({"ready": True})
        stop = asyncio.Event()
        loop_.add_signal_handler(signal.SIGTERM, stop.set)
        start = _cpu()
        await stop.wait()
        _emit({"cpu": _cpu() - start, "datagrams": Echo.count})

    _run(main(), loop)


def yardstick(loop: str, seconds: float = 4.0) -> dict[str, float]:
    """Datagrams a trivial echo server handles per CPU-second (receive + send = 2 events)."""
    port = _free_port(socket.SOCK_DGRAM)
    server = _spawn("echo-server", "--port", str(port), "--loop", loop)
    _wait_ready(server)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect((HOST, port))
    client.settimeout(1)
    payload = bytes(172)
    in_flight = 64
    for _ in range(in_flight):
        client.send(payload)
    deadline = time.monotonic() + seconds
    echoed = 0
    while time.monotonic() < deadline:
        try:
            client.recv(2048)
        except TimeoutError:
            client.send(payload)
            continue
        echoed += 1
        client.send(payload)
    server.send_signal(signal.SIGTERM)
    result = json.loads(server.stdout.readline())  # type: ignore[union-attr]
    server.wait()
    events = 2 * result["datagrams"]
    return {
        "events_per_cpu_second": events / result["cpu"],
        "datagrams_per_second": echoed / seconds,
    }


# --- the orchestration ---------------------------------------------------------------------------


def _free_port(kind: int = socket.SOCK_STREAM, host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _spawn(role: str, *args: str, src: str | None = None) -> subprocess.Popen[str]:
    """This script in another role; `src`: the `outdial` source tree it imports instead."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(process: subprocess.Popen[str]) -> None:
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line or not json.loads(line).get("ready"):
        raise RuntimeError(f"a helper process did not start: {line!r}")


def _speech_wav(path: Path) -> Path:
    """g711a.pcap's speech as an A-law WAV file, for sipp's `rtp_stream`."""
    data = PCAP.read_bytes()
    audio = bytearray()
    at = 24  # the pcap's global header; then each record: a 16-byte header, the frame
    while at + 16 <= len(data):
        length = struct.unpack_from("<I", data, at + 8)[0]
        frame = data[at + 16 : at + 16 + length]
        ip = frame[14:]  # after the Ethernet header
        audio += ip[(ip[0] & 0x0F) * 4 + 8 + 12 :]  # after the IP, UDP and RTP headers
        at += 16 + length
    fmt = struct.pack("<HHIIHHH", 6, 1, 8000, 8000, 1, 8, 0)  # format 6: A-law
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(audio)) + audio
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _callee_scenario(
    path: Path, *, media_port: int, plays: int, stream: Path | None = None
) -> Path:
    if stream is None:  # a thread and a raw socket per play, 30 ms packets
        play = (
            f'  <nop><action><exec play_pcap_audio="{PCAP}" /></action></nop>\n'
            f'  <pause milliseconds="{PLAY_MS}" />\n'
        ) * plays
    else:  # sipp's RTP streaming threads, one UDP socket per call, 20 ms packets
        play = (
            f'  <nop><action><exec rtp_stream="{stream},-1,8" /></action></nop>\n'
            f'  <pause milliseconds="{PLAY_MS * plays}" />\n'
        )
    path.write_text(
        f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench callee">
  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp="sip:[^&gt;;]*" search_in="hdr" header="From:" assign_to="caller" />
    </action>
  </recv>
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
      c=IN IP4 {SINK_HOST}
      t=0 0
      m=audio {media_port} RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv request="ACK" />
{play}  <send retrans="500">
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
</scenario>
"""
    )
    return path


def _process_cpu(pid: int) -> float:
    """CPU seconds a process (and its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def measure(
    calls: int,
    args: argparse.Namespace,
    agent_url: str,
    agent: subprocess.Popen[str],
    agent_lines: "queue.Queue[dict[str, Any]]",
) -> dict[str, Any]:
    """One rung of the ladder: N calls through sipp, the relay, the echo agent, the sink."""
    run = f"n{calls}-{int(time.time())}"
    # Placing the calls took up to 4.4 times as long as the rate says on a busy machine; the
    # first calls must still be up when the last is answered and the window ends.
    call_seconds = 6 * calls / args.rate + 1.0 + args.window + 10.0
    plays = math.ceil(call_seconds * 1000 / PLAY_MS)
    sink_port = _free_port(socket.SOCK_DGRAM, SINK_HOST)
    sipp_port = _free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory() as folder:
        stream = _speech_wav(Path(folder) / "speech.wav") if args.callee_audio == "stream" else None
        scenario = _callee_scenario(
            Path(folder) / "callee.xml", media_port=sink_port, plays=plays, stream=stream
        )
        sink = _spawn("sink", "--port", str(sink_port))
        _wait_ready(sink)
        sipp = subprocess.Popen(
            [
                "sipp",
                *("-sf", str(scenario), "-i", HOST, "-p", str(sipp_port), "-m", str(calls)),
                *("-mi", HOST, "-mp", str(_free_port(socket.SOCK_DGRAM))),
                *("-nostdin", "-timeout", str(int(call_seconds * 2 + 120))),
                *("-trace_err", "-error_file", str(Path(folder) / "errors.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
        )
        time.sleep(0.5)
        relay = _spawn(
            "relay",
            *("--calls", str(calls), "--rate", str(args.rate), "--window", str(args.window)),
            *("--sipp-port", str(sipp_port), "--agent-url", agent_url, "--loop", args.loop),
            *("--run", run, "--call-seconds", str(call_seconds), "--nice", str(args.nice)),
            *(["--realtime"] if args.realtime else []),
            src=args.relay_src,
        )
        started = json.loads(relay.stdout.readline())  # type: ignore[union-attr]
        if "error" in started:
            print(f"  {started['error']}", file=sys.stderr)
            started = json.loads(relay.stdout.readline())  # type: ignore[union-attr]
        helpers = {"sipp": sipp.pid, "agent": agent.pid, "sink": sink.pid}
        helper_cpu = {name: _process_cpu(pid) for name, pid in helpers.items()}
        total_before, idle_before = _machine_busy()
        window = json.loads(relay.stdout.readline())  # type: ignore[union-attr]
        total_after, idle_after = _machine_busy()
        helper_cpu = {name: _process_cpu(pid) - helper_cpu[name] for name, pid in helpers.items()}
        start, end = window["window"]
        sink.stdin.write(f"{start} {end}\n")  # type: ignore[union-attr]
        sink.stdin.flush()  # type: ignore[union-attr]
        heard = json.loads(sink.stdout.readline())  # type: ignore[union-attr]
        sink.wait()
        ends = json.loads(relay.stdout.readline())["ends"]  # type: ignore[union-attr]
        relay.wait()
        subprocess.run(["pkill", "-TERM", "-P", str(sipp.pid)], check=False)
        streams = []
        deadline = time.monotonic() + 10
        while len(streams) < calls and time.monotonic() < deadline:
            try:
                summary = agent_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if summary.get("attempt", "").startswith(run + "-"):
                streams.append(summary)
        if sipp.poll() is None:
            sipp.kill()
    busy = 1 - (idle_after - idle_before) / max(1.0, total_after - total_before)
    # Lost: sequence numbers the relay never received, chunks the agent never got.
    inbound_lost = sum(s["gaps"] for s in streams) + window["rtp_lost"]
    cpu_per_call_second = window["cpu"] / (calls * (end - start))
    result = {
        "calls": calls,
        "live": window["live"],
        "ends": ends,
        "inbound_lost": inbound_lost,
        "streams_reported": len(streams),
        "outbound_lost": heard["lost"] + max(0, heard["kernel_drops"]),
        "p1": heard["p1"],
        "p50": heard["p50"],
        "p99": heard["p99"],
        "max": heard["max"],
        "late_ticks": window["late_ticks"],
        "gc": (window["gc_collections"], window["gc_max_ms"]),
        "ramp_seconds": window["ramp_seconds"],
        "packets_per_call_second": [n / (calls * (end - start)) for n in window["packets_in_out"]],
        "placing_seconds": window["placing_seconds"],
        "cpu_ms_per_call_second": cpu_per_call_second * 1000,
        "relay_cpu_share": window["cpu"] / (end - start),
        "helpers_cpu_share": {k: v / (end - start) for k, v in helper_cpu.items()},
        "machine_busy": busy,
        "events_per_cpu_second": EVENTS_PER_CALL_SECOND[args.callee_audio] / cpu_per_call_second,
    }
    result["passed"] = (
        window["live"] == calls
        and ends == {"answered": calls}
        and len(streams) == calls
        and inbound_lost == 0
        and result["outbound_lost"] == 0
        and heard["p1"] >= 15
        and heard["p99"] <= 25
    )
    return result


def orchestrate(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} · loop {args.loop} · window {args.window} s"
        + (f" · relay from {args.relay_src}" if args.relay_src else "")
        + (f" · relay nice {args.nice}" if args.nice else "")
        + (" · relay SCHED_FIFO" if args.realtime else "")
    )
    stick = yardstick(args.loop)
    print(
        f"yardstick (trivial UDP echo, {args.loop}): "
        f"{stick['events_per_cpu_second']:,.0f} I/O events per CPU-second, "
        f"{stick['datagrams_per_second']:,.0f} echoes/s with one client"
    )
    agent_port = _free_port()
    agent = _spawn("agent", "--port", str(agent_port), "--loop", args.loop)
    _wait_ready(agent)
    agent_lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read_agent() -> None:
        for line in agent.stdout:  # type: ignore[union-attr]
            agent_lines.put(json.loads(line))

    threading.Thread(target=read_agent, daemon=True).start()
    agent_url = f"ws://{HOST}:{agent_port}/agent"
    best = 0
    results: list[dict[str, Any]] = []
    print(
        "| calls | passed | lost in/out | spacing p1/p50/p99/max ms | late ticks | "
        "relay CPU ms per call-s | CPU share relay/sipp/agent/sink | machine busy | "
        "events per CPU-s | of yardstick |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for calls in (int(n) for n in args.ladder.split(",")):
            r = measure(calls, args, agent_url, agent, agent_lines)
            results.append(r)
            print(
                f"| {calls} | {'yes' if r['passed'] else 'no'} | "
                f"{r['inbound_lost']}/{r['outbound_lost']} | "
                f"{r['p1']:.1f}/{r['p50']:.1f}/{r['p99']:.1f}/{r['max']:.1f} | "
                f"{r['late_ticks']} | {r['cpu_ms_per_call_second']:.2f} | "
                f"{r['relay_cpu_share']:.0%}/"
                + "/".join(f"{v:.0%}" for v in r["helpers_cpu_share"].values())
                + f" | {r['machine_busy']:.0%} | "
                f"{r['events_per_cpu_second']:,.0f} | "
                f"{r['events_per_cpu_second'] / stick['events_per_cpu_second']:.0%} |",
                flush=True,
            )
            print(
                "  RTP packets per call-second in/out: "
                + "/".join(f"{n:.1f}" for n in r["packets_per_call_second"])
                + f"; garbage collections in the window: {r['gc'][0]}, "
                f"longest {r['gc'][1]:.1f} ms",
                flush=True,
            )
            if r["ends"] != {"answered": calls} or r["live"] != calls:
                print(
                    f"  ends {r['ends']}, live {r['live']}; all placed after "
                    f"{r['placing_seconds']:.1f} s, answered after {r['ramp_seconds']:.1f} s",
                    flush=True,
                )
                break
            if r["passed"]:
                best = calls
            if r["relay_cpu_share"] >= 0.95:
                break  # the relay has a whole core: more calls only queue up
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()
    print(f"most concurrent calls with nothing lost and spacing within 20 ± 5 ms: {best}")
    if results:
        per_call = min(r["cpu_ms_per_call_second"] for r in results)
        print(
            f"calls one core carries at the lowest CPU per call-second seen: {1000 / per_call:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="orchestrate")
    parser.add_argument("--ladder", default="50,100,200,300,400,500,600,800")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="calls placed per second")
    parser.add_argument(
        "--relay-src",
        help="the relay imports outdial from this source tree (to run older code side by side)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="the relay's nice value (negative: priority over the harness and other work)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run the relay under SCHED_FIFO (real-time priority, as media servers run)",
    )
    parser.add_argument(
        "--callee-audio",
        choices=["pcap", "stream"],
        default="pcap",
        help="sipp plays g711a.pcap (30 ms packets, a raw socket per call) or streams it "
        "(rtp_stream: 20 ms packets from the call's own UDP socket)",
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--calls", type=int)
    parser.add_argument("--sipp-port", type=int)
    parser.add_argument("--agent-url")
    parser.add_argument("--run")
    parser.add_argument("--call-seconds", type=float)
    args = parser.parse_args()
    if args.role == "agent":
        run_agent(args.port, args.loop)
    elif args.role == "sink":
        run_sink(args.port)
    elif args.role == "relay":
        run_relay(args)
    elif args.role == "echo-server":
        run_echo_server(args.port, args.loop)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
