"""The simulated carrier (shipped code, no database): outcomes, events, timing, CDR, hang-ups,
lookups for reconciliation, shutdown; and the registry that picks it."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from outdial.config import Settings
from outdial.telephony.base import CallEvent, DialRequest
from outdial.telephony.plivo import PlivoProvider
from outdial.telephony.registry import create_provider
from outdial.telephony.simulated import SimulatedProvider, script_for
from outdial.telephony.twilio import TwilioProvider
from tests.conftest import simulated_outcome

FROM = "+15559990000"


def request(attempt_id: str, to: str, **fields: object) -> DialRequest:
    return DialRequest(
        attempt_id=attempt_id, to=to, from_number=FROM, ring_timeout_seconds=15, **fields
    )


class Recorder:
    """An event sink that keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self._changed = asyncio.Condition()

    async def __call__(self, event: CallEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, attempt_id: str) -> list[CallEvent]:
        return [e for e in self.events if e.attempt_id == attempt_id]

    def ended(self, attempt_id: str) -> CallEvent | None:
        return next((e for e in self.of(attempt_id) if e.kind == "ended"), None)

    async def wait_for(self, attempt_id: str, kind: str, within: float = 5.0) -> CallEvent:
        def found() -> bool:
            return any(e.kind == kind for e in self.of(attempt_id))

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), within)
        return next(e for e in self.of(attempt_id) if e.kind == kind)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def cdr(tmp_path: Path) -> Path:
    return tmp_path / "cdr.jsonl"


@pytest.fixture
async def provider(recorder: Recorder, cdr: Path) -> AsyncIterator[SimulatedProvider]:
    sim = SimulatedProvider(recorder, speed=1000, cdr_path=str(cdr))
    yield sim
    await sim.aclose()


def cdr_lines(path: Path) -> list[dict[str, str]]:
    """The dial lines of the CDR (media lines, `"kind": "media"`, left out)."""
    return [line for line in all_cdr_lines(path) if "kind" not in line]


def all_cdr_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def append_cdr_line(path: Path, line: dict[str, str]) -> None:
    with path.open("a") as cdr:
        cdr.write(json.dumps(line) + "\n")


# --- outcomes --------------------------------------------------------------------------------


@pytest.mark.parametrize("last2", range(100))
def test_script_follows_the_outcome_table(last2: int) -> None:
    script = script_for(request("att_x", f"+155599901{last2:02d}"))
    assert script.end_reason == simulated_outcome(f"{last2:02d}")
    assert script.answered == (simulated_outcome(f"{last2:02d}") in ("answered", "voicemail"))


async def test_every_number_ends_as_its_last_two_digits_say(
    provider: SimulatedProvider, recorder: Recorder
) -> None:
    attempts = {f"att_{n:02d}": n for n in range(100)}
    for attempt_id, n in attempts.items():
        assert await provider.place(request(attempt_id, f"+155512345{n:02d}")) == "sim-" + (
            attempt_id
        )
    for attempt_id in attempts:
        await recorder.wait_for(attempt_id, "ended")
    for attempt_id, n in attempts.items():
        expected = simulated_outcome(f"{n:02d}")
        kinds = [e.kind for e in recorder.of(attempt_id)]
        picked_up = expected in ("answered", "voicemail")
        assert kinds == (["answered", "ended"] if picked_up else ["ended"]), attempt_id
        end = recorder.ended(attempt_id)
        assert end is not None and end.end_reason == expected, (n, end)
        assert (end.talk_seconds > 0) == picked_up, (n, end)


# --- events and timing -----------------------------------------------------------------------


async def test_answered_then_ended_with_talk_in_simulated_seconds(cdr: Path) -> None:
    recorder = Recorder()
    sim = SimulatedProvider(recorder, speed=100, cdr_path=str(cdr))
    try:
        # ...0001: answered after 3 s of ringing, then 10 + 1 % 50 = 11 s of talk.
        await sim.place(request("att_talk", "+15559990001"))
        await recorder.wait_for("att_talk", "ended")
    finally:
        await sim.aclose()
    answered, ended = recorder.of("att_talk")
    assert (answered.kind, ended.kind) == ("answered", "ended")
    assert answered.end_reason is None and answered.talk_seconds == 0
    assert ended.end_reason == "answered"
    # 0.11 s of wall time at speed 100, reported as the 11 simulated seconds it stands for.
    assert ended.talk_seconds in (11, 12)
    wall = (ended.at - answered.at).total_seconds()
    assert 0.11 <= wall < 0.5
    assert answered.at.tzinfo is not None and ended.at.tzinfo is not None


@pytest.mark.parametrize(
    ("behavior", "talk"), [("leave_message", 15), ("hangup", 1)], ids=["message", "hangup"]
)
async def test_voicemail_talk_follows_the_agents_voicemail_behavior(
    provider: SimulatedProvider, recorder: Recorder, behavior: str, talk: int
) -> None:
    await provider.place(request("att_vm", "+15559990095", voicemail_behavior=behavior))
    ended = await recorder.wait_for("att_vm", "ended")
    assert [e.kind for e in recorder.of("att_vm")] == ["answered", "ended"]
    assert (ended.end_reason, ended.talk_seconds) == ("voicemail", talk)


async def test_speed_factor_scales_wall_time(cdr: Path) -> None:
    # ...0049: 3 s of ringing and 10 + 49 = 59 s of talk: 62 simulated seconds in all.
    for speed in (400.0, 100.0):
        recorder = Recorder()
        sim = SimulatedProvider(recorder, speed=speed, cdr_path=str(cdr))
        try:
            started = time.monotonic()
            await sim.place(request(f"att_{int(speed)}", "+15559990049"))
            ended = await recorder.wait_for(f"att_{int(speed)}", "ended")
            wall = time.monotonic() - started
        finally:
            await sim.aclose()
        assert 62 / speed <= wall < 62 / speed + 0.15, (speed, wall)
        assert ended.talk_seconds in (59, 60)


# --- the CDR ---------------------------------------------------------------------------------


async def test_cdr_line_is_written_before_place_returns(
    provider: SimulatedProvider, cdr: Path
) -> None:
    before = datetime.now(UTC)
    await provider.place(request("att_a", "+15559990001"))
    # No await in between: the line is there the moment place() has returned.
    first = cdr_lines(cdr)
    await provider.place(request("att_b", "+15559990085"))
    second = cdr_lines(cdr)
    after = datetime.now(UTC)
    assert len(first) == 1
    assert second[0] == first[0]
    assert [set(line) for line in second] == [{"attempt_id", "to", "from", "at"}] * 2
    assert [(line["attempt_id"], line["to"], line["from"]) for line in second] == [
        ("att_a", "+15559990001", FROM),
        ("att_b", "+15559990085", FROM),
    ]
    for line in second:
        at = datetime.fromisoformat(line["at"])
        assert at.tzinfo is not None and before <= at <= after


async def test_cdr_appends_to_an_existing_file_and_is_optional(
    recorder: Recorder, cdr: Path
) -> None:
    append_cdr_line(cdr, {"attempt_id": "att_old", "to": "+1", "from": "+1", "at": "x"})
    sim = SimulatedProvider(recorder, speed=1000, cdr_path=str(cdr))
    await sim.place(request("att_new", "+15559990001"))
    await sim.aclose()
    assert [line["attempt_id"] for line in cdr_lines(cdr)] == ["att_old", "att_new"]

    without = SimulatedProvider(recorder, speed=1000)
    await without.place(request("att_nocdr", "+15559990001"))
    await recorder.wait_for("att_nocdr", "ended")
    await without.aclose()
    assert [line["attempt_id"] for line in cdr_lines(cdr)] == ["att_old", "att_new"]


# --- hang-ups --------------------------------------------------------------------------------


async def test_hangup_of_an_answered_call_ends_it_answered_with_the_talk_so_far(
    recorder: Recorder, cdr: Path
) -> None:
    sim = SimulatedProvider(recorder, speed=10, cdr_path=str(cdr))  # 5.9 s of talk
    try:
        await sim.place(request("att_live", "+15559990049"))
        await recorder.wait_for("att_live", "answered")
        await asyncio.sleep(0.1)
        hung_up_at = time.monotonic()
        await sim.hangup("att_live")
        ended = await recorder.wait_for("att_live", "ended", within=1.0)
        assert time.monotonic() - hung_up_at < 0.2
    finally:
        await sim.aclose()
    assert ended.end_reason == "answered"
    assert 1 <= ended.talk_seconds <= 3  # ~0.1 s at speed 10; not the scripted 59
    assert len(recorder.of("att_live")) == 2
    assert (await sim.lookup("att_live")).status == "ended"


async def test_hangup_while_ringing_ends_it_unanswered(recorder: Recorder, cdr: Path) -> None:
    sim = SimulatedProvider(recorder, speed=1, cdr_path=str(cdr))  # 3 s of ringing
    try:
        await sim.place(request("att_ring", "+15559990001"))
        await asyncio.sleep(0.05)
        await sim.hangup("att_ring")
        ended = await recorder.wait_for("att_ring", "ended", within=1.0)
    finally:
        await sim.aclose()
    assert [e.kind for e in recorder.of("att_ring")] == ["ended"]
    assert (ended.end_reason, ended.talk_seconds) == ("no_answer", 0)


async def test_hangup_right_after_place_still_ends_the_call(recorder: Recorder, cdr: Path) -> None:
    """A hang-up that reaches the carrier before the call's own task has run must still end
    it with an event: the dialer waits for that event to settle the participant."""
    sim = SimulatedProvider(recorder, speed=1, cdr_path=str(cdr))
    try:
        await sim.place(request("att_early", "+15559990001"))
        await sim.hangup("att_early")
        ended = await recorder.wait_for("att_early", "ended", within=1.0)
    finally:
        await sim.aclose()
    assert (ended.end_reason, ended.talk_seconds) == ("no_answer", 0)
    assert (await sim.lookup("att_early")).status == "ended"


async def test_hangup_of_an_unknown_or_ended_call_is_ignored(
    provider: SimulatedProvider, recorder: Recorder
) -> None:
    await provider.hangup("att_nobody")
    await provider.place(request("att_done", "+15559990085"))
    await recorder.wait_for("att_done", "ended")
    await provider.hangup("att_done")
    await asyncio.sleep(0.02)
    assert [e.kind for e in recorder.events] == ["ended"]


# --- lookup, for reconciliation --------------------------------------------------------------


async def test_lookup_answers_live_then_ended(recorder: Recorder, cdr: Path) -> None:
    sim = SimulatedProvider(recorder, speed=20, cdr_path=str(cdr))  # ring 0.15 s, talk 0.55 s
    try:
        await sim.place(request("att_q", "+15559990001"))
        ringing = await sim.lookup("att_q")
        assert (ringing.status, ringing.answered_at, ringing.end) == ("live", None, None)
        answered = await recorder.wait_for("att_q", "answered")
        talking = await sim.lookup("att_q")
        assert (talking.status, talking.answered_at) == ("live", answered.at)
        ended = await recorder.wait_for("att_q", "ended")
        done = await sim.lookup("att_q")
    finally:
        await sim.aclose()
    assert done.status == "ended"
    assert done.end == ended


async def test_lookup_of_an_attempt_the_carrier_never_received(
    provider: SimulatedProvider,
) -> None:
    await provider.place(request("att_seen", "+15559990001"))
    assert (await provider.lookup("att_unseen")).status == "never_received"
    # A prefix of an id in the CDR is a different id.
    assert (await provider.lookup("att_see")).status == "never_received"


async def test_lookup_of_an_attempt_another_process_placed_is_unknown(
    recorder: Recorder, cdr: Path
) -> None:
    """In the CDR but not in this process: the carrier had it, its fate is not known here."""
    dead = SimulatedProvider(recorder, speed=1, cdr_path=str(cdr))
    await dead.place(request("att_elsewhere", "+15559990001"))
    successor = SimulatedProvider(Recorder(), speed=1, cdr_path=str(cdr))
    try:
        state = await successor.lookup("att_elsewhere")
        assert (state.status, state.end) == ("unknown", None)
        assert (await successor.lookup("att_never")).status == "never_received"
    finally:
        await dead.aclose()
        await successor.aclose()


async def test_lookup_without_a_cdr_is_unknown(recorder: Recorder) -> None:
    sim = SimulatedProvider(recorder, speed=1000)
    try:
        assert (await sim.lookup("att_anything")).status == "unknown"
    finally:
        await sim.aclose()


# --- shutdown --------------------------------------------------------------------------------


async def test_aclose_hangs_up_every_live_call(recorder: Recorder, cdr: Path) -> None:
    sim = SimulatedProvider(recorder, speed=10, cdr_path=str(cdr))
    await sim.place(request("att_talking", "+15559990049"))  # answered after 0.3 s
    await sim.place(request("att_ringing", "+15559990070"))  # rings 1.5 s, no answer
    await recorder.wait_for("att_talking", "answered")
    await sim.place(request("att_just_placed", "+15559990001"))
    started = time.monotonic()
    await sim.aclose()
    assert time.monotonic() - started < 0.5
    ends = {e.attempt_id: e for e in recorder.events if e.kind == "ended"}
    assert set(ends) == {"att_talking", "att_ringing", "att_just_placed"}
    assert ends["att_talking"].end_reason == "answered"
    assert ends["att_talking"].talk_seconds < 59
    assert ends["att_ringing"].end_reason == "no_answer"
    assert ends["att_just_placed"].end_reason == "no_answer"
    for attempt_id in ends:
        assert (await sim.lookup(attempt_id)).status == "ended"
    await asyncio.sleep(0.05)
    assert len(recorder.events) == 4  # nothing more arrives after aclose


# --- the registry ----------------------------------------------------------------------------


async def test_registry_builds_the_simulated_provider_from_settings(
    recorder: Recorder, cdr: Path
) -> None:
    settings = Settings(telephony_provider="simulated", simulated_speed=7.5, simulated_cdr=str(cdr))
    provider = create_provider(settings, recorder)
    try:
        assert isinstance(provider, SimulatedProvider)
        assert provider.name == "simulated"
        assert (provider.speed, provider.cdr_path) == (7.5, str(cdr))
        assert provider.events is recorder
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("plivo", "OUTDIAL_PUBLIC_URL, OUTDIAL_PLIVO_AUTH_ID, OUTDIAL_PLIVO_AUTH_TOKEN"),
        ("twilio", "OUTDIAL_PUBLIC_URL, OUTDIAL_TWILIO_ACCOUNT_SID, OUTDIAL_TWILIO_AUTH_TOKEN"),
    ],
)
async def test_carriers_need_their_credentials_and_get_them(
    recorder: Recorder, name: str, missing: str
) -> None:
    with pytest.raises(ValidationError, match=missing):
        Settings(telephony_provider=name)
    with pytest.raises(ValidationError) as refused:
        Settings(telephony_provider=name, plivo_auth_token="sekrit", twilio_auth_token="sekrit")
    assert "sekrit" not in str(refused.value)  # tokens never echoed
    configured = Settings(
        telephony_provider=name,
        public_url="https://outdial.example.com",
        plivo_auth_id="MA1",
        plivo_auth_token="t",
        twilio_account_sid="AC1",
        twilio_auth_token="t",
    )
    provider = create_provider(configured, recorder)
    assert (type(provider), provider.name) == (
        {"plivo": PlivoProvider, "twilio": TwilioProvider}[name],
        name,
    )
    await provider.aclose()


def test_unknown_provider_names_are_rejected_by_configuration() -> None:
    with pytest.raises(ValidationError, match="telephony_provider"):
        Settings(telephony_provider="carrier-pigeon")
    with pytest.raises(ValidationError, match="simulated_speed"):
        Settings(simulated_speed=0)
