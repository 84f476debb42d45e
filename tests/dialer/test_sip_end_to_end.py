"""End to end through the `sip` provider: a batch queued through the API is dialed by a running
dialer over SIP to sipp, a real SIP peer on loopback that treats each number by its last two
digits (tests/telephony/sipp/by_number.xml)."""

from sqlalchemy import select

from outdial.dialer.models import DialAttempt
from tests.dialer.conftest import queue_drained, wait_until
from tests.telephony.sipp_peer import sipp

EXPECTED = {  # last two digits → (participant status, end_reason)
    "01": ("completed", "answered"),
    "02": ("completed", "answered"),
    "86": ("failed", "busy"),
    "03": ("failed", "rejected"),
    "80": ("failed", "no_answer"),
    "04": ("failed", "invalid_number"),
}


async def test_a_batch_dialed_over_sip_ends_each_participant_as_the_trunk_answered(
    client, tenant, agent, running_dialer, app, tmp_path
) -> None:
    numbers = [f"+155500010{suffix}" for suffix in EXPECTED]
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": numbers, "ring_timeout_seconds": 15},
        headers=tenant.headers,
    )
    assert queued.status_code == 202, queued.text
    call_id = queued.json()["id"]
    async with sipp("by_number.xml", tmp_path, "-d", "1700", calls=len(numbers)) as peer:
        async with running_dialer(telephony_provider="sip", sip_trunk=peer.trunk):
            await wait_until(lambda: queue_drained(client, tenant.headers))
        code = await peer.exit_code()
        assert code == 0, f"sipp exited {code}:\n{peer.errors()}"

    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    outcomes = {p["identity"][-2:]: (p["status"], p["end_reason"]) for p in call["participants"]}
    assert outcomes == EXPECTED
    assert call["status"] == "completed"
    for p in call["participants"]:
        assert p["attempts"] == 1
        answered = p["end_reason"] == "answered"
        assert (p["answered_at"] is not None) == answered
        assert p["duration_seconds"] == (2 if answered else None), p  # 1.7 s of talk
        assert (p["cost"] > 0) == answered
    async with app.state.sessionmaker() as session:
        attempts = (await session.scalars(select(DialAttempt))).all()
    # The trunk's records name each attempt: the Call-ID starts with its id.
    assert sorted(a.provider_call_id.split(".")[0] for a in attempts) == sorted(
        a.id for a in attempts
    )
    messages = (tmp_path / "messages.log").read_text()
    assert all(f"X-Outdial-Attempt: {a.id}" in messages for a in attempts)
