"""A SIP trunk that is down (issue 10, defect 8): nothing listens on its port (the kernel
answers ICMP port-unreachable, real on loopback), a send cannot leave, or the trunk stops
answering (sipp stopped, or a scenario that answers nothing). A dial the trunk never took is
no outcome: `place` raises CarrierUnreachable (at once, or after Timer B when nothing at all
comes back), `lookup` answers `never_received`, no event follows, and the dialer puts the job
back to wait, stops dialing while the trunk is down and dials each number once when it is up."""

import asyncio
import logging
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select

from outdial.config import Settings
from outdial.dialer.breaker import BreakerState
from outdial.dialer.models import DialAttempt, DialJob
from outdial.telephony import sip_transaction
from outdial.telephony.base import CarrierUnreachable, DialRequest
from outdial.telephony.sip import SipProvider, Trunk
from outdial.telephony.sip_message import parse, response_to
from tests.conftest import MakeTenant, create_agent, register_number
from tests.dialer.conftest import dialer_running, wait_until
from tests.telephony.sipp_peer import sipp
from tests.telephony.test_simulated import Recorder

FROM = "+15559990000"
MakeProvider = Callable[..., SipProvider]


def request(attempt_id: str, *, to: str = "+15551230001") -> DialRequest:
    return DialRequest(attempt_id=attempt_id, to=to, from_number=FROM, ring_timeout_seconds=15)


def dead_port() -> int:
    """A loopback UDP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """T1 = 25 ms: Timer B gives up after 1.6 s instead of 32 s."""
    monkeypatch.setattr(sip_transaction, "T1", 0.025)
    monkeypatch.setattr(sip_transaction, "TRANSACTION_TIMEOUT", 64 * 0.025)


@pytest.fixture
async def make_provider(recorder: Recorder) -> AsyncIterator[MakeProvider]:
    made: list[SipProvider] = []

    def make(trunk: str, **options: object) -> SipProvider:
        provider = SipProvider(recorder, trunk=Trunk.parse(trunk), **options)  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def not_taken(provider: SipProvider, attempt_id: str, within: float) -> CarrierUnreachable:
    """Place a dial that the trunk must not take; answers what `place` raised."""
    with pytest.raises(CarrierUnreachable) as raised:
        await asyncio.wait_for(provider.place(request(attempt_id)), within)
    assert (await provider.lookup(attempt_id)).status == "never_received"
    return raised.value


# --- the provider -----------------------------------------------------------------------------


async def test_a_dial_to_a_port_where_nothing_listens_is_refused_at_once(
    make_provider: MakeProvider, recorder: Recorder
) -> None:
    provider = make_provider(f"sip:127.0.0.1:{dead_port()}")
    started = time.monotonic()
    error = await not_taken(provider, "att_dead", within=5)
    assert time.monotonic() - started < 1.0  # the ICMP error, not Timer B's 32 s
    assert "Connection refused" in str(error) and "127.0.0.1" in str(error)
    # Many at once, as a dialer sends them: each is refused, none waits for Timer B.
    started = time.monotonic()
    results = await asyncio.gather(
        *(provider.place(request(f"att_dead{n}")) for n in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, CarrierUnreachable) for r in results), results
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.1)
    assert recorder.events == []  # no outcome: no number was dialed


async def test_a_send_that_cannot_leave_fails_the_dial_at_once(
    make_provider: MakeProvider,
) -> None:
    # Broadcast without SO_BROADCAST: the kernel refuses the send itself (EACCES).
    provider = make_provider("sip:255.255.255.255:5060", bind_host="127.0.0.1")
    error = await not_taken(provider, "att_unsendable", within=1)
    assert "Permission denied" in str(error)


async def test_an_icmp_error_from_another_address_leaves_the_trunks_dials_alone(
    make_provider: MakeProvider,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
        trunk.bind(("127.0.0.1", 0))
        trunk.settimeout(2)
        provider = make_provider(f"sip:127.0.0.1:{trunk.getsockname()[1]}")
        placing = asyncio.create_task(provider.place(request("att_ringing")))
        invite = await asyncio.to_thread(trunk.recv, 65535)
        # Someone else asks something from a port it then closes: our answer is refused.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            options = (
                "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKgone\r\nFrom: <sip:a@b>;tag=1\r\n"
                "To: <sip:x@127.0.0.1>\r\nCall-ID: gone\r\nCSeq: 1 OPTIONS\r\n\r\n"
            )
            gone.sendto(options.encode(), provider.local_address)
        await asyncio.sleep(0.2)
        assert not placing.done()  # still waiting for the trunk, not failed
        ringing = response_to(parse(invite), 180, "Ringing")
        trunk.sendto(ringing.encode(), provider.local_address)
        assert (await asyncio.wait_for(placing, 1)).startswith("att_ringing.")


async def test_a_trunk_that_answers_nothing_never_took_the_dial(
    fast_timers: None, make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("silent.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        started = time.monotonic()
        error = await not_taken(provider, "att_silent", within=10)
        assert 1.6 <= time.monotonic() - started < 3.0  # Timer B (T1 = 25 ms)
    assert "answered nothing in 1.6 s" in str(error)
    # It did receive the INVITE, and each retransmission; it never took the call.
    messages = (tmp_path / "messages.log").read_text()
    assert messages.count("INVITE sip:") == 7
    assert recorder.events == []


async def test_a_trunk_that_answered_then_stopped_takes_no_more_dials(
    fast_timers: None, make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("answer_wait_bye.xml", tmp_path, calls=2) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request("att_before"))
        await recorder.wait_for("att_before", "answered")
        peer.process.send_signal(signal.SIGSTOP)  # still bound: no ICMP, just silence
        try:
            await not_taken(provider, "att_after", within=10)
        finally:
            peer.process.send_signal(signal.SIGCONT)
    assert [e.kind for e in recorder.of("att_after")] == []


async def test_a_trunk_that_died_mid_call_ends_the_call_and_refuses_the_next(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("answer_wait_bye.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request("att_live"))
        await recorder.wait_for("att_live", "answered")
        peer.process.kill()
        await peer.process.wait()
    started = time.monotonic()
    await provider.hangup("att_live")
    end = await recorder.wait_for("att_live", "ended", 5)
    # The BYE was refused (ICMP): the call is over now, not after Timer F's 32 s.
    assert time.monotonic() - started < 1.0
    assert end.end_reason == "answered"
    await not_taken(provider, "att_next", within=1)


async def test_a_trunk_that_died_while_it_rang_ends_the_call_when_it_is_canceled(
    make_provider: MakeProvider, recorder: Recorder, tmp_path: Path
) -> None:
    async with sipp("ring_until_cancel.xml", tmp_path) as peer:
        provider = make_provider(peer.trunk)
        await provider.place(request("att_ringing"))
        peer.process.kill()
        await peer.process.wait()
    started = time.monotonic()
    await provider.hangup("att_ringing")
    end = await recorder.wait_for("att_ringing", "ended", 5)
    # The CANCEL was refused: no final response will come, so the call ends now.
    assert time.monotonic() - started < 1.0
    assert (end.end_reason, end.talk_seconds) == ("no_answer", 0)


# --- the dialer -------------------------------------------------------------------------------


def jobs_of(app: FastAPI) -> Callable[[], "asyncio.Future[list[DialJob]]"]:
    async def read() -> list[DialJob]:
        async with app.state.sessionmaker() as session:
            return list((await session.scalars(select(DialJob))).all())

    return read  # type: ignore[return-value]


async def test_a_batch_against_a_port_where_nothing_listens_waits_instead_of_failing(
    client, tenant, agent, app: FastAPI, database_url: str
) -> None:
    numbers = [f"+155500020{i:02d}" for i in range(10)]
    queued = await client.post(
        "/v1/calls/batch", json={"agent_id": agent["id"], "to": numbers}, headers=tenant.headers
    )
    assert queued.status_code == 202, queued.text
    settings = Settings(
        database_url=database_url,
        telephony_provider="sip",
        sip_trunk=f"sip:127.0.0.1:{dead_port()}",
        dialer_poll_seconds=0.02,
        dialer_shutdown_grace_seconds=1,
    )
    read_jobs = jobs_of(app)

    async def all_waiting_again() -> bool:
        return all(
            j.status == "waiting" and j.attempt == 0 and j.run_at > j.created_at
            for j in await read_jobs()
        )

    async with dialer_running(app, settings):
        await wait_until(all_waiting_again, within=5)
    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    assert {(p["status"], p["end_reason"]) for p in call["participants"]} == {("queued", None)}


async def test_each_dial_the_carrier_never_took_makes_its_job_wait_longer(
    client, tenant, agent, app: FastAPI, database_url: str
) -> None:
    numbers = [f"+155500030{i:02d}" for i in range(4)]
    queued = await client.post(
        "/v1/calls/batch", json={"agent_id": agent["id"], "to": numbers}, headers=tenant.headers
    )
    assert queued.status_code == 202, queued.text
    settings = Settings(
        database_url=database_url,
        telephony_provider="sip",
        sip_trunk=f"sip:127.0.0.1:{dead_port()}",
        dialer_poll_seconds=0.02,
        dialer_breaker_failures=1000,  # the backoff alone
        dialer_unreachable_backoff_seconds=[0.2, 0.5, 60],
    )
    read_jobs = jobs_of(app)

    async def at_the_cap() -> bool:
        return all(j.never_received == 3 for j in await read_jobs())

    async with dialer_running(app, settings):
        started = time.monotonic()
        await wait_until(at_the_cap, within=10)
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
        jobs = await read_jobs()
    # Dialed at once, then after 0.2 s, then after 0.5 s; now each waits the cap (60 s).
    assert 0.7 <= took < 5
    for job in jobs:
        assert (job.status, job.attempt, job.never_received) == ("waiting", 0, 3)
        waited = (job.run_at - job.created_at).total_seconds()
        assert 60.7 <= waited < 60.7 + took + 1
    async with app.state.sessionmaker() as session:
        assert (await session.scalars(select(DialAttempt))).all() == []  # all withdrawn
    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    assert {(p["status"], p["attempts"]) for p in call["participants"]} == {("queued", 0)}


def circuit_gauge() -> float | None:
    return REGISTRY.get_sample_value("outdial_provider_circuit_open", {"provider": "sip"})


async def test_a_batch_waits_out_a_dead_trunk_then_each_number_is_dialed_once(
    client,
    make_tenant: MakeTenant,
    app: FastAPI,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = await make_tenant(max_concurrency=50, calls_per_second=100)
    await register_number(client, tenant, FROM)
    agent = await create_agent(client, tenant)
    # by_number.xml answers every number but those ending 86, 03, 80 and 04.
    numbers = [f"+155500040{i:02d}" for i in range(10, 60)]
    queued = await client.post(
        "/v1/calls/batch", json={"agent_id": agent["id"], "to": numbers}, headers=tenant.headers
    )
    assert queued.status_code == 202, queued.text
    port = dead_port()
    settings = Settings(
        database_url=database_url,
        telephony_provider="sip",
        sip_trunk=f"sip:127.0.0.1:{port}",
        dialer_poll_seconds=0.02,
        dialer_breaker_failures=3,
        dialer_breaker_cool_down_seconds=0.3,
        dialer_unreachable_backoff_seconds=[0.2, 0.4, 0.8],
    )
    read_jobs = jobs_of(app)
    caplog.set_level(logging.INFO, logger="outdial.dials")

    async with dialer_running(app, settings) as dialer:

        async def down_and_all_waiting() -> bool:
            jobs = await read_jobs()
            return dialer.breaker.state is not BreakerState.CLOSED and all(
                j.status == "waiting" and j.never_received >= 1 for j in jobs
            )

        await wait_until(down_and_all_waiting, within=10)
        assert circuit_gauge() == 1
        call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
        # Nobody failed for a dead trunk: all wait, but for the breaker's probe (one dial every
        # cool-down), which may be under way at this moment.
        statuses = [(p["status"], p["end_reason"]) for p in call["participants"]]
        assert set(statuses) <= {("queued", None), ("dialing", None)}, statuses
        assert statuses.count(("dialing", None)) <= 1, statuses
        # Open for a while (probes every 0.3 s fail): one line said so, none per dial.
        await asyncio.sleep(1)
        assert dialer.breaker.state is not BreakerState.CLOSED

        async with sipp("by_number.xml", tmp_path, "-d", "100", calls=50, port=port) as peer:

            async def completed() -> bool:
                stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
                return stats["waiting"] == 0 and stats["active"] == 0

            await wait_until(completed, within=30)
            code = await peer.exit_code()
            assert code == 0, f"sipp exited {code}:\n{peer.errors()}"
        assert dialer.breaker.state is BreakerState.CLOSED
        assert circuit_gauge() == 0

    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    assert {(p["status"], p["end_reason"], p["attempts"]) for p in call["participants"]} == {
        ("completed", "answered", 1)
    }
    # Each number reached the trunk in exactly one call (one Call-ID), once it was up.
    messages = (tmp_path / "messages.log").read_text()
    invites = set(re.findall(r"^INVITE sip:(\+\d+)@.*?^Call-ID: (\S+)", messages, re.M | re.S))
    assert Counter(number for number, _ in invites) == Counter(numbers)
    async with app.state.sessionmaker() as session:
        attempts = (await session.scalars(select(DialAttempt))).all()
    assert sorted(a.to_number for a in attempts) == sorted(numbers)
    assert {(a.attempt_no, a.status, a.end_reason) for a in attempts} == {(1, "ended", "answered")}
    # One line when the trunk went down, one when it came back; nothing per dial.
    lines = [r for r in caplog.records if r.name == "outdial.dials" and "provider" in r.msg]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"]
    down, up = (r.getMessage() for r in lines)
    assert down.startswith("telephony provider sip is down: no new dials until it takes one")
    assert "3 dials in a row were not taken" in down and "Connection refused" in down
    assert up == "telephony provider sip is up again: dialing resumes"
