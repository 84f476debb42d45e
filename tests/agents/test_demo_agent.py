"""`outdial demo-agent`: a real one on loopback, called by the simulated carrier: it greets,
echoes what it hears (the CDR counts it), keeps what it heard as a WAV, and with a secret
refuses unsigned upgrades; and the command runs as a process and stops on SIGTERM."""

import asyncio
import os
import signal
import socket
import sys
import wave
from pathlib import Path

from outdial.agents.demo import serving
from outdial.signing import new_secret
from outdial.telephony.base import DialRequest, StreamTarget
from outdial.telephony.media.g711 import ulaw_to_linear
from outdial.telephony.media.tones import callee_hello, greeting
from outdial.telephony.simulated import SimulatedProvider
from tests.telephony.test_simulated import Recorder, all_cdr_lines


def target(url: str, secret: str, attempt_id: str) -> StreamTarget:
    return StreamTarget(
        url=url,
        secret=secret,
        call_id="call_1",
        participant_id=f"participant_{attempt_id}",
        attempt_id=attempt_id,
        agent_id="0193f0c2-0000-7000-8000-000000000001",
        to="+15551230001",
        from_number="+15559990000",
    )


async def test_the_demo_agent_greets_then_echoes_and_records(tmp_path: Path) -> None:
    secret = new_secret()
    cdr = tmp_path / "cdr.jsonl"
    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=5, cdr_path=str(cdr))  # talks 2.2 s
    async with serving(host="127.0.0.1", port=0, secret=secret, record=tmp_path) as url:
        await sim.place(
            DialRequest(
                "att_ok", "+15551230001", "+15559990000", 15, stream=target(url, secret, "att_ok")
            )
        )
        forged = target(url, new_secret(), "att_forged")
        await sim.place(
            DialRequest("att_forged", "+15551230001", "+15559990000", 15, stream=forged)
        )
        ok = await recorder.wait_for("att_ok", "ended", within=10)
        refused = await recorder.wait_for("att_forged", "ended", within=10)
        await asyncio.sleep(0.2)  # the agent writes its WAV as the stream closes
    await sim.aclose()

    assert ok.end_reason == "answered"
    assert refused.end_reason == "agent_unavailable"  # 401 at the upgrade
    media = {line["attempt_id"]: line for line in all_cdr_lines(cdr) if line.get("kind")}
    # it said its greeting, then echoed the callee's hello, frame for frame
    greeting_frames = -(-len(greeting()) // 160)
    assert media["att_ok"]["agent_frames"] == greeting_frames + len(callee_hello()) // 160
    assert media["att_ok"]["agent_bytes"] == len(greeting()) + len(callee_hello())
    assert media["att_forged"]["agent_frames"] == 0
    with wave.open(str(tmp_path / "participant_att_ok-heard.wav")) as heard:
        assert (heard.getnchannels(), heard.getsampwidth(), heard.getframerate()) == (1, 2, 8000)
        pcm = heard.readframes(heard.getnframes())
    expected = b"".join(
        ulaw_to_linear(c).to_bytes(2, "little", signed=True) for c in callee_hello()
    )
    assert pcm == expected


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_command_serves_until_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outdial.cli",
        "demo-agent",
        "--port",
        str(port),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        announced = f"demo agent listening on ws://127.0.0.1:{port}".encode()
        while announced not in (line := await asyncio.wait_for(process.stderr.readline(), 20)):
            assert line, "the demo agent exited before listening"
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
