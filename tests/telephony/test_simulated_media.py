"""The simulated carrier opens the agent's stream too (a real WebSocket agent on loopback): the
callee says its synthetic hello, the agent's audio is counted in the CDR, a machine is
connected only for agents that leave messages, and the abandonment rule holds."""

import asyncio
from pathlib import Path

from outdial.telephony.base import DialRequest
from outdial.telephony.media.tones import callee_hello
from outdial.telephony.simulated import SimulatedProvider
from tests.telephony.agent_peer import AgentCall, agent_peer, greet
from tests.telephony.test_simulated import Recorder, all_cdr_lines, cdr_lines

FROM = "+15559990000"
HUMAN = "+15551230001"  # answered, talks 11 s at speed 1
MACHINE = "+15551230095"  # voicemail


def dial(attempt_id: str, to: str, target, **fields) -> DialRequest:
    return DialRequest(attempt_id, to, FROM, 15, stream=target, **fields)


def chatty(frames: int):
    """An agent that says `frames` 20 ms frames once the stream starts, then listens."""

    async def script(call: AgentCall) -> None:
        await call.wait_for_event("start")
        for _ in range(frames):
            await call.send_audio(b"\x55" * 160)

    return script


async def test_an_answered_call_talks_with_the_agent_and_the_cdr_counts_it(
    tmp_path: Path,
) -> None:
    cdr = tmp_path / "cdr.jsonl"
    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=5, cdr_path=str(cdr))  # 0.6 s ring, 2.2 s talk
    async with agent_peer(chatty(12)) as agent:
        await sim.place(dial("att_1", HUMAN, agent.target("att_1")))
        stream = await agent.next_call()
        end = await recorder.wait_for("att_1", "ended", within=10)
        await stream.wait_for(lambda c: c.closed.is_set())
    await sim.aclose()

    assert (end.end_reason, end.talk_seconds) == ("answered", 11)
    assert stream.signature_valid
    assert stream.events[:2] == ["connected", "start"] and stream.events[-1] == "stop"
    assert stream.start["start"]["customParameters"]["answered_by"] == "human"
    assert stream.audio() == callee_hello()  # the callee's hello, whole, in 20 ms frames
    assert len(stream.of("media")) == len(callee_hello()) // 160
    lines = all_cdr_lines(cdr)
    assert [line["attempt_id"] for line in cdr_lines(cdr)] == ["att_1"]  # one dial line
    assert lines[1] == {
        "attempt_id": "att_1",
        "kind": "media",
        "agent_frames": 12,
        "agent_bytes": 12 * 160,
    }


async def test_a_machine_is_connected_only_for_agents_that_leave_messages(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=20, cdr_path=str(tmp_path / "cdr.jsonl"))
    async with agent_peer() as agent:
        leaves = agent.target("att_leave")
        await sim.place(dial("att_leave", MACHINE, leaves, voicemail_behavior="leave_message"))
        stream = await agent.next_call()
        await sim.place(dial("att_hangup", MACHINE, agent.target("att_hangup")))
        answered = await recorder.wait_for("att_hangup", "answered")
        hung_up = await recorder.wait_for("att_hangup", "ended")
        await recorder.wait_for("att_leave", "ended")
    await sim.aclose()
    assert stream.start["start"]["customParameters"]["answered_by"] == "machine"
    assert answered.machine and hung_up.end_reason == "voicemail"
    assert len(agent.calls) == 1, "a machine was connected to an agent that hangs up on them"
    assert [e.machine for e in recorder.of("att_leave") if e.kind == "answered"] == [True]


async def test_an_unreachable_or_silent_agent_ends_the_call_agent_unavailable(
    tmp_path: Path,
) -> None:
    async def silent(call: AgentCall) -> None:
        await call.wait_for_event("start")

    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=3, cdr_path=str(tmp_path / "cdr.jsonl"))
    async with agent_peer(silent) as agent:
        await sim.place(dial("att_silent", HUMAN, agent.target("att_silent")))
        down = agent.target("att_down", url="ws://127.0.0.1:9/nobody")
        await sim.place(dial("att_down", HUMAN, down))
        for attempt in ("att_silent", "att_down"):
            answered = await recorder.wait_for(attempt, "answered", within=5)
            end = await recorder.wait_for(attempt, "ended", within=5)
            assert end.end_reason == "agent_unavailable", attempt
            assert (end.at - answered.at).total_seconds() < 2.5
        stream = await agent.next_call()
        await stream.wait_for(lambda c: c.closed.is_set())
    await sim.aclose()
    assert (end.at - answered.at).total_seconds() < 0.5  # unreachable: at once
    assert stream.events[-1] == "stop"


async def test_the_agent_hanging_up_ends_the_call_and_a_hang_up_stops_the_stream(
    tmp_path: Path,
) -> None:
    async def script(call: AgentCall) -> None:
        await greet(call)
        if call.start["start"]["customParameters"]["attempt_id"] == "att_brief":
            await asyncio.sleep(0.2)
            await call.ws.close()  # the agent hangs up

    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=2, cdr_path=str(tmp_path / "cdr.jsonl"))
    async with agent_peer(script) as agent:  # both calls ring 1.5 s, then talk 5.5 s
        await sim.place(dial("att_brief", HUMAN, agent.target("att_brief")))
        await sim.place(dial("att_cut", "+15551230002", agent.target("att_cut")))
        streams = [await agent.next_call(), await agent.next_call()]
        end = await recorder.wait_for("att_brief", "ended", within=5)
        assert end.end_reason == "answered" and end.talk_seconds == 0
        await sim.hangup("att_cut")  # the dialer hangs up (the call was ended through the API)
        assert (await recorder.wait_for("att_cut", "ended")).end_reason == "answered"
        by_attempt = {s.start["start"]["customParameters"]["attempt_id"]: s for s in streams}
        cut = by_attempt["att_cut"]
        await cut.wait_for(lambda c: c.closed.is_set())
    await sim.aclose()
    assert cut.events[-1] == "stop"
    assert "stop" not in by_attempt["att_brief"].events  # it hung up itself
