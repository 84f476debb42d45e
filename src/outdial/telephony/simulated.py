"""A carrier simulated in-process: no account, no network. Shipped code, not a test double.

The outcome depends on the number's last two digits: 00-69 answered, 70-84 no answer,
85-94 busy, 95-97 voicemail, 98-99 failed. Ring and talk times are divided by the speed
factor. With a CDR path set, every dial received is appended there as one JSON line
`{"attempt_id", "to", "from", "at"}` before `place` returns: the carrier's own record of what
it was asked to dial, which tests count to prove nobody was dialed twice.

A dial that carries a stream (its agent has a `stream_url`) opens it when answered, as a real
carrier would: a person (`answered_by: human`) says "hello" (a second of synthetic audio)
and listens; a machine does so only when the agent leaves messages (`leave_message`,
`answered_by: machine`), and is hung up on otherwise, as without a stream. The agent closing
its socket hangs up; an agent that cannot be reached or sends no audio within 2 s (real
seconds: the agent is real) ends the call `agent_unavailable`. What the agent sent is
recorded in the CDR as a second line for that attempt, `{"attempt_id", "kind": "media",
"agent_frames", "agent_bytes"}`, written when the call ends (dial lines have no `kind`)."""

import asyncio
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from outdial.telephony.base import (
    AnsweredBy,
    AttemptState,
    CallEvent,
    DialRequest,
    EndReason,
    EventSink,
    StreamTarget,
    TelephonyProvider,
)
from outdial.telephony.media.agent import AgentStream, StreamEnd
from outdial.telephony.media.clock import PacketClock
from outdial.telephony.media.g711 import FRAME_BYTES
from outdial.telephony.media.tones import callee_hello

ENDED_REMEMBERED = 100_000
ZERO_LATENCY_SECONDS = 0.001


@dataclass(frozen=True, slots=True)
class Script:
    """What the simulated far end does, in seconds at speed 1."""

    ring_seconds: float
    answered: bool
    talk_seconds: float
    end_reason: EndReason


def script_for(request: DialRequest) -> Script:
    """The deterministic behaviour for a number, from its last two (and four) digits."""
    last2 = int(request.to[-2:])
    talk = 10 + int(request.to[-4:]) % 50
    if last2 <= 69:
        return Script(3, True, talk, "answered")
    if last2 <= 84:
        return Script(request.ring_timeout_seconds, False, 0, "no_answer")
    if last2 <= 94:
        return Script(1, False, 0, "busy")
    if last2 <= 97:
        message = 15 if request.voicemail_behavior == "leave_message" else 1
        return Script(4, True, message, "voicemail")
    return Script(0.5, False, 0, "carrier_error")


def _now() -> datetime:
    return datetime.now(UTC)


class SimulatedCallee:
    """The far end of a simulated call that carries a stream: it says `callee_hello`, 20 ms a
    tick of the packet clock, and plays (counts, and drops) what the agent sends."""

    def __init__(self, target: StreamTarget, *, answered_by: AnsweredBy) -> None:
        self.stream = AgentStream(target, answered_by=answered_by, on_end=self._agent_ended)
        self._agent_end: asyncio.Future[StreamEnd] = asyncio.get_running_loop().create_future()
        self._said = 0
        self._clock: PacketClock | None = None

    async def talk(self, seconds: float) -> StreamEnd | None:
        """Talk for `seconds`, or until the agent ends the call (answered: how)."""
        self.stream.start()
        self._clock = PacketClock.of_running_loop()
        self._clock.subscribe(self, self.tick)
        try:
            return await asyncio.wait_for(asyncio.shield(self._agent_end), seconds)
        except TimeoutError:
            return None  # the callee hung up

    def tick(self) -> None:
        """Say the next 20 ms of the clip, hear the agent's next 20 ms."""
        hello = callee_hello()
        if self._said < len(hello):
            self.stream.send_audio(hello[self._said : self._said + FRAME_BYTES], self._said)
            self._said += FRAME_BYTES
        if self.stream.next_frame() is not None:
            self.stream.played()

    def close(self) -> None:
        """The call is over: `stop` the stream unless the agent ended it."""
        if self._clock is not None:
            self._clock.unsubscribe(self)
        self.stream.stop()

    def _agent_ended(self, end: StreamEnd) -> None:
        if not self._agent_end.done():
            self._agent_end.set_result(end)


class SimulatedProvider(TelephonyProvider):
    name = "simulated"

    def __init__(self, events: EventSink, *, speed: float = 1.0, cdr_path: str | None = None):
        super().__init__(events)
        self.speed = speed
        self.cdr_path = cdr_path
        self._cdr_fd = (
            os.open(cdr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if cdr_path else None
        )
        self._live: dict[str, asyncio.Task[None]] = {}
        self._answered: dict[str, datetime] = {}
        self._ended: OrderedDict[str, CallEvent] = OrderedDict()

    async def place(self, request: DialRequest) -> str:
        """Record the dial in the CDR, then play the number's script in a task of its own."""
        self._write_cdr(request)
        task = asyncio.create_task(self._play(request, script_for(request)))
        self._live[request.attempt_id] = task
        task.add_done_callback(lambda _: self._live.pop(request.attempt_id, None))
        return "sim-" + request.attempt_id

    def _write_cdr(self, request: DialRequest) -> None:
        if self._cdr_fd is None:
            return
        line = {
            "attempt_id": request.attempt_id,
            "to": request.to,
            "from": request.from_number,
            "at": _now().isoformat(),
        }
        # One write() on an O_APPEND descriptor: lines from many processes never interleave.
        os.write(self._cdr_fd, (json.dumps(line) + "\n").encode())

    def _write_media_cdr(self, attempt_id: str, stream: AgentStream) -> None:
        if self._cdr_fd is None:
            return
        line = {
            "attempt_id": attempt_id,
            "kind": "media",
            "agent_frames": stream.agent_frames,
            "agent_bytes": stream.agent_bytes,
        }
        os.write(self._cdr_fd, (json.dumps(line) + "\n").encode())

    async def _sleep(self, seconds: float) -> None:
        delay = seconds / self.speed
        # Below a millisecond (a carrier at "zero latency") a timer per call is pure cost.
        await asyncio.sleep(delay if delay >= ZERO_LATENCY_SECONDS else 0)

    async def _play(self, request: DialRequest, script: Script) -> None:
        answered_at: datetime | None = None
        end_reason = script.end_reason
        callee: SimulatedCallee | None = None
        try:
            await self._sleep(script.ring_seconds)
            if script.answered:
                answered_at = _now()
                machine = script.end_reason == "voicemail"
                self._answered[request.attempt_id] = answered_at
                await self.events(
                    CallEvent(request.attempt_id, "answered", answered_at, machine=machine)
                )
                callee = self._callee_for(request, machine=machine)
                if callee is None:
                    await self._sleep(script.talk_seconds)
                elif await callee.talk(script.talk_seconds / self.speed) is (
                    StreamEnd.AGENT_UNAVAILABLE
                ):
                    end_reason = "agent_unavailable"
        except asyncio.CancelledError:
            # Hung up by us: an answered call ends as answered, an unanswered one as no answer.
            end_reason = script.end_reason if answered_at else "no_answer"
        finally:
            if callee is not None:
                callee.close()
                self._write_media_cdr(request.attempt_id, callee.stream)
        ended_at = _now()
        # Durations are in simulated seconds, as a real carrier would bill them; a call cut
        # short by a hang-up lasted what it lasted, scheduling delays never make it longer.
        elapsed = (ended_at - answered_at).total_seconds() * self.speed if answered_at else 0
        talk = round(min(elapsed, script.talk_seconds))
        end = CallEvent(request.attempt_id, "ended", ended_at, end_reason, talk)
        self._answered.pop(request.attempt_id, None)
        self._remember(end)
        await self.events(end)

    @staticmethod
    def _callee_for(request: DialRequest, *, machine: bool) -> SimulatedCallee | None:
        """The callee that talks with the agent, when the dial carries a stream; a machine
        only when the agent leaves messages (otherwise it is hung up on, as without one)."""
        if request.stream is None:
            return None
        if machine and request.voicemail_behavior != "leave_message":
            return None
        return SimulatedCallee(request.stream, answered_by="machine" if machine else "human")

    def _remember(self, end: CallEvent) -> None:
        self._ended[end.attempt_id] = end
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """Hang up a live simulated call; its `ended` event follows."""
        task = self._live.get(attempt_id)
        if task is not None:
            _cancel_once_started(task)

    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """Live or ended calls of this process are known; for others the CDR tells whether the
        carrier ever received the dial (if not, it is safe to place it again)."""
        if attempt_id in self._live:
            return AttemptState("live", answered_at=self._answered.get(attempt_id))
        if attempt_id in self._ended:
            return AttemptState("ended", end=self._ended[attempt_id])
        if self.cdr_path is None:
            return AttemptState("unknown")
        received = await asyncio.to_thread(_cdr_mentions, Path(self.cdr_path), attempt_id)
        return AttemptState("unknown" if received else "never_received")

    async def aclose(self) -> None:
        """Hang up every live call and close the CDR."""
        tasks = list(self._live.values())
        for task in tasks:
            _cancel_once_started(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._cdr_fd is not None:
            os.close(self._cdr_fd)
            self._cdr_fd = None


def _cancel_once_started(task: asyncio.Task[None]) -> None:
    """Cancel a call's task after its first step. A task cancelled before it has started never
    runs `_play`'s handler, so the call would end without an `ended` event (and the dialer
    would wait for it forever). Its first step was scheduled by `create_task`, and the loop
    runs callbacks in the order they were scheduled, so this cancel comes after it."""
    asyncio.get_running_loop().call_soon(task.cancel)


def _cdr_mentions(path: Path, attempt_id: str) -> bool:
    if not path.exists():
        return False
    needle = f'"attempt_id": "{attempt_id}"'
    with path.open() as cdr:
        return any(needle in line for line in cdr)
