"""WebRTC participants end with their call (issue 13, defect 6): no provider today sees them
join or leave, so they end when the call's last PSTN participant ends, on
`POST /v1/calls/{id}/end`, or (a call with no PSTN participant) after the idle limit."""

from datetime import timedelta

from sqlalchemy import select, update

from outdial.calls.models import Call, Participant
from outdial.db import utcnow
from outdial.dialer import status
from tests.calls.test_read import direct, end_call
from tests.dialer.conftest import cdr_path, running_dialer, wait_until

__all__ = ["cdr_path", "running_dialer"]  # the dialer tests' fixtures, used here too

WEBRTC = {"transport": "webrtc", "identity": "alice"}


async def get_call(client, tenant, call_id):
    response = await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_webrtc_participant_ends_when_the_last_pstn_leg_ends(
    client, tenant, agent, running_dialer
) -> None:
    queued = await direct(
        client,
        tenant,
        agent,
        [WEBRTC, {"transport": "pstn", "identity": "+15559990001"}],
    )

    async def call_ended() -> bool:
        return (await get_call(client, tenant, queued["id"]))["ended_at"] is not None

    async with running_dialer():
        await wait_until(call_ended)
    call = await get_call(client, tenant, queued["id"])
    webrtc, pstn = call["participants"]
    assert (pstn["status"], pstn["end_reason"]) == ("completed", "answered")
    assert (webrtc["status"], webrtc["end_reason"]) == ("completed", "call_ended")
    assert webrtc["ended_at"] is not None
    assert webrtc["cost"] == 0 and webrtc["attempts"] == 0
    assert call["status"] == "completed"


async def test_a_failed_pstn_leg_ends_its_webrtc_participants_too(
    client, tenant, agent, running_dialer
) -> None:
    queued = await direct(
        client,
        tenant,
        agent,
        [{"transport": "pstn", "identity": "+15559990085"}, WEBRTC],  # busy
    )

    async def call_ended() -> bool:
        return (await get_call(client, tenant, queued["id"]))["ended_at"] is not None

    async with running_dialer():
        await wait_until(call_ended)
    call = await get_call(client, tenant, queued["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("failed", "busy"),
        ("completed", "call_ended"),
    ]
    assert call["status"] == "completed"


async def test_end_ends_an_all_webrtc_call_completed(client, tenant, agent) -> None:
    room = await direct(client, tenant, agent, [WEBRTC, {"transport": "webrtc", "identity": "b"}])
    assert room["status"] == "in_progress"
    call = await end_call(client, tenant, room["id"])
    assert call["status"] == "completed"
    assert call["ended_at"] is not None
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("completed", "call_ended"),
        ("completed", "call_ended"),
    ]
    assert (await end_call(client, tenant, room["id"]))["ended_at"] == call["ended_at"]


async def test_end_with_queued_pstn_cancels_them_and_ends_the_webrtc_one(
    client, tenant, agent
) -> None:
    queued = await direct(
        client, tenant, agent, [WEBRTC, {"transport": "pstn", "identity": "+15559990001"}]
    )
    call = await end_call(client, tenant, queued["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("completed", "call_ended"),
        ("canceled", "canceled"),
    ]
    assert call["status"] == "canceled"  # someone ended it before its PSTN leg was dialed


async def test_end_while_a_pstn_leg_is_live_keeps_the_webrtc_one_until_it_hangs_up(
    client, tenant, agent, running_dialer
) -> None:
    queued = await direct(
        client, tenant, agent, [WEBRTC, {"transport": "pstn", "identity": "+15559990001"}]
    )

    async def answered() -> bool:
        call = await get_call(client, tenant, queued["id"])
        return call["participants"][1]["status"] == "in_progress"

    async def call_ended() -> bool:
        return (await get_call(client, tenant, queued["id"]))["ended_at"] is not None

    # A slow carrier: the answered call stays up long enough to be ended from the API.
    async with running_dialer(simulated_speed=5.0):
        await wait_until(answered)
        call = await end_call(client, tenant, queued["id"])
        assert call["participants"][0]["status"] == "queued"  # the room is still up
        assert call["ended_at"] is None
        await wait_until(call_ended)
    call = await get_call(client, tenant, queued["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("completed", "call_ended"),
        ("completed", "answered"),
    ]
    assert call["status"] == "completed"


async def test_an_idle_all_webrtc_call_ends_after_the_limit(client, tenant, agent, app) -> None:
    old = await direct(client, tenant, agent, [WEBRTC])
    fresh = await direct(client, tenant, agent, [WEBRTC])
    mixed = await direct(
        client, tenant, agent, [WEBRTC, {"transport": "pstn", "identity": "+15559990001"}]
    )
    limit = timedelta(hours=2)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Call)
            .where(Call.id.in_([old["id"], mixed["id"]]))
            .values(created_at=utcnow() - limit - timedelta(seconds=1))
        )
    async with app.state.sessionmaker() as session, session.begin():
        ended = await status.end_idle_webrtc_calls(session, idle_limit=limit, now=utcnow())
    assert ended == 1
    call = await get_call(client, tenant, old["id"])
    assert call["status"] == "completed"
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("completed", "call_ended")
    ]
    # Within the limit, or with a PSTN leg (it ends with that leg): left alone.
    for untouched in (fresh, mixed):
        assert (await get_call(client, tenant, untouched["id"]))["ended_at"] is None


async def test_a_call_whose_provider_sees_webrtc_is_left_to_it(client, tenant, agent, app) -> None:
    """A provider that reports WebRTC participants joining and leaving (livekit) ends them
    itself: one in the room stays until it is reported leaving, one still queued when the
    call is ended never came (canceled), and such calls are never swept."""
    room = await direct(client, tenant, agent, [WEBRTC, {"transport": "webrtc", "identity": "b"}])
    async with app.state.sessionmaker() as session, session.begin():
        assert await session.scalar(select(Call.webrtc_seen).where(Call.id == room["id"])) is False
        await session.execute(
            update(Call)
            .where(Call.id == room["id"])
            .values(webrtc_seen=True, created_at=utcnow() - timedelta(days=1))
        )
        await session.execute(
            update(Participant)
            .where(Participant.call_id == room["id"], Participant.identity == "alice")
            .values(status="in_progress", answered_at=utcnow())
        )
    async with app.state.sessionmaker() as session, session.begin():
        assert (
            await status.end_idle_webrtc_calls(session, idle_limit=timedelta(0), now=utcnow()) == 0
        )
    call = await end_call(client, tenant, room["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("in_progress", None),
        ("canceled", "canceled"),
    ]
    assert call["ended_at"] is None


async def test_the_dialer_sweeps_idle_webrtc_calls(client, tenant, agent, running_dialer) -> None:
    room = await direct(client, tenant, agent, [WEBRTC])

    async def ended() -> bool:
        return (await get_call(client, tenant, room["id"]))["ended_at"] is not None

    async with running_dialer(webrtc_idle_limit_seconds=0.1, webrtc_idle_sweep_seconds=0.05):
        await wait_until(ended, within=10)
    call = await get_call(client, tenant, room["id"])
    assert (call["status"], call["participants"][0]["end_reason"]) == ("completed", "call_ended")
