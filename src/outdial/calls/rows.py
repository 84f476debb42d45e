"""Rows of calls and participants as they are first stored, for one bulk insert of a batch's
(or a campaign claim's) calls, participants and dial jobs."""

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.models import Call, Participant
from outdial.calls.statuses import CallStatus, ParticipantStatus
from outdial.db import bulk_insert
from outdial.dialer import jobs as dial_jobs


def call_row(
    *,
    id: str,
    tenant_id: str,
    agent_id: str,
    kind: str,
    status: CallStatus,
    from_number: str | None,
    variables: dict[str, Any],
    post_call: dict[str, Any],
    now: datetime,
    batch_id: str | None = None,
    campaign_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    calling_window: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    ring_timeout_seconds: int = 30,
    state_rules: bool = False,
    max_attempts_per_24h: int | None = None,
    webrtc_seen: bool = False,
) -> dict[str, Any]:
    """A call's row, for `insert_calls`."""
    return {
        "id": id,
        "tenant_id": tenant_id,
        "agent_id": agent_id,
        "kind": kind,
        "batch_id": batch_id,
        "campaign_id": campaign_id,
        "status": str(status),
        "from_number": from_number,
        "metadata": metadata or {},
        "variables": variables,
        "post_call": post_call,
        "calling_window": calling_window,
        "retry": retry,
        "ring_timeout_seconds": ring_timeout_seconds,
        "state_rules": state_rules,
        "max_attempts_per_24h": max_attempts_per_24h,
        "webrtc_seen": webrtc_seen,
        "created_at": now,
    }


def participant_row(
    *,
    id: str,
    call_id: str,
    tenant_id: str,
    position: int,
    transport: str,
    identity: str,
    from_number: str | None,
    metadata: dict[str, Any],
    leg_id: str | None,
    job_id: str | None,
    hold_micros: int,
    now: datetime,
) -> dict[str, Any]:
    """A queued participant's row, for `insert_calls`."""
    return {
        "id": id,
        "call_id": call_id,
        "tenant_id": tenant_id,
        "position": position,
        "transport": transport,
        "identity": identity,
        "from_number": from_number,
        "metadata": metadata,
        "status": str(ParticipantStatus.QUEUED),
        "attempts": 0,
        "telephony_leg_id": leg_id,
        "job_id": job_id,
        "hold_micros": hold_micros,
        "cost_micros": 0,
        "created_at": now,
    }


async def insert_calls(
    session: AsyncSession,
    *,
    calls: list[dict[str, Any]],
    participants: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
) -> None:
    """Store calls, their participants and their dial jobs (rows from `call_row`,
    `participant_row` and the dialer's `job_row`) in the caller's transaction, through the
    driver's bulk path: a batch's 500 participants, or a campaign claim's calls."""
    await bulk_insert(session, Call.__table__, calls)
    await bulk_insert(session, Participant.__table__, participants)
    await dial_jobs.enqueue(session, jobs=jobs)
