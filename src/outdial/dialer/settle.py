"""Settling ended attempts: a retry per the call's policy, or the participant's end (status,
end reason, charge, hold released) and, when it was the last, the call's."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial import observability as obs
from outdial.billing import service as billing
from outdial.calls.models import Participant
from outdial.calls.statuses import REACHED, EndReason, ParticipantStatus
from outdial.db import TEXT, TIMESTAMP, one_of, update_rows
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.policy import DialPolicy, policies_for
from outdial.dialer.sources import ParticipantChange, source
from outdial.dialer.status import change_participants, complete_finished_calls
from outdial.dialer.statuses import UNFINISHED_JOB, AttemptStatus, JobStatus

ATTEMPTS = DialAttempt.__table__
JOBS = DialJob.__table__

FINAL_JOB = {
    ParticipantStatus.COMPLETED: JobStatus.COMPLETED,
    ParticipantStatus.FAILED: JobStatus.FAILED,
    ParticipantStatus.CANCELED: JobStatus.CANCELED,
}


@dataclass(frozen=True, slots=True)
class Ending:
    """A participant's attempt that has ended (or could not start), to be settled."""

    job_id: str
    attempt_id: str | None
    end_reason: EndReason
    at: datetime
    talk_seconds: int = 0
    progress: "Progress | None" = None
    """What else was heard of the attempt in the same write batch (placed, answered)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """An attempt's placement and answer, written together with its end when all three
    reach the writer in one batch: one UPDATE of the attempt instead of three."""

    placed_at: datetime | None = None
    provider_call_id: str | None = None
    """From `place`: kept only if no callback stored the carrier's id for the call."""
    answered_at: datetime | None = None
    answered_by: str | None = None
    connected_call_id: str | None = None
    """From the answer: the carrier's id of the connected call, which wins."""


@dataclass(frozen=True, slots=True)
class Settled:
    """One ending as settle wrote it: what the metrics and the dial's log line report once
    the transaction has committed (see `report_settled`)."""

    ending: Ending
    tenant_id: str
    call_id: str
    participant_id: str
    to_number: str


def report_settled(settled: Sequence[Settled]) -> None:
    """Count each dial's outcome and write its one log line. Call it after the settling
    transaction commits (a rolled-back and retried write would count twice). Jobs canceled
    before any dial were never dials."""
    for s in settled:
        if s.ending.attempt_id is None and s.ending.end_reason == EndReason.CANCELED:
            continue
        obs.dial_ended(
            str(s.ending.end_reason),
            tenant_id=s.tenant_id,
            call_id=s.call_id,
            participant_id=s.participant_id,
            attempt_id=s.ending.attempt_id,
            to=s.to_number,
            talk_seconds=s.ending.talk_seconds,
        )


def final_status(end_reason: EndReason) -> ParticipantStatus:
    """The status a participant ends in for an end reason."""
    if end_reason in REACHED:
        return ParticipantStatus.COMPLETED
    if end_reason == EndReason.CANCELED:
        return ParticipantStatus.CANCELED
    return ParticipantStatus.FAILED


async def settle(session: AsyncSession, *, endings: Sequence[Ending]) -> list[Settled]:
    """Settle ended attempts (and jobs ended before any attempt: canceled, on the DNC list):
    retry per the call's policy, or finish the participant (status, end reason, duration,
    charge, hold released) and, when it was the last, the call. A job is settled once: an
    ending of a job already final, or a second ending of a job in the same call, ends its
    attempt and nothing more. Answers what it settled."""
    if not endings:
        return []
    await _end_attempts(session, [e for e in endings if e.attempt_id])
    jobs = await _unfinished_jobs(session, job_ids=[e.job_id for e in endings])
    endings = _once_per_job(endings, jobs)
    policies = await policies_for(session, call_ids={row.call_id for row in jobs.values()})
    retries: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    changes: list[ParticipantChange] = []
    releases: list[billing.Release] = []
    for ending in endings:
        job = jobs[ending.job_id]
        policy = policies[job.call_id]
        who = {"campaign_id": job.campaign_id, "number": job.to_number, "dials": job.attempt}
        if _should_retry(policy, ending.end_reason, job.attempt, job.max_attempts):
            delay = timedelta(seconds=(policy.retry or {}).get("delay_seconds", 0))
            retries.append({"id": job.id, "run_at": ending.at + delay})
            changes.append(
                ParticipantChange(
                    job.participant_id, job.tenant_id, ParticipantStatus.QUEUED, ending.at, **who
                )
            )
            continue
        status = final_status(ending.end_reason)
        reached = status == ParticipantStatus.COMPLETED
        cost = (
            billing.call_cost_micros(policy.rate_per_minute_micros, ending.talk_seconds)
            if reached
            else 0
        )
        finals.append({"id": job.id, "status": str(FINAL_JOB[status])})
        changes.append(
            ParticipantChange(
                job.participant_id,
                job.tenant_id,
                status,
                ending.at,
                end_reason=ending.end_reason,
                answered_at=ending.progress.answered_at if ending.progress else None,
                duration_seconds=ending.talk_seconds if reached else None,
                cost_micros=cost,
                **who,
            )
        )
        releases.append(billing.Release(job.tenant_id, job.hold_micros, cost, job.participant_id))
    await _requeue_jobs(session, retries)
    await _finish_jobs(session, finals)
    await change_participants(session, changes=changes)
    if finals:
        ended = [jobs[f["id"]] for f in finals]
        # Before release_holds: campaign rows are locked before the tenant's, as claims do.
        await source().jobs_finished(
            session, source_ids={job.campaign_id for job in ended if job.campaign_id}
        )
        await billing.release_holds(session, releases=releases)
        await complete_finished_calls(session, call_ids={job.call_id for job in ended})
    return [
        Settled(e, job.tenant_id, job.call_id, job.participant_id, job.to_number)
        for e in endings
        if (job := jobs[e.job_id])
    ]


async def _unfinished_jobs(session: AsyncSession, *, job_ids: Sequence[str]) -> dict[str, Any]:
    """These jobs, those not final yet, locked: a racing settler of the same job (one that
    learnt of the same end another way) waits here and then finds it final. What settles a job
    releases its participant's hold, and a hold released twice is credit the tenant never
    had."""
    rows = await session.execute(
        select(
            DialJob.id,
            DialJob.tenant_id,
            DialJob.call_id,
            DialJob.participant_id,
            DialJob.attempt,
            DialJob.max_attempts,
            DialJob.campaign_id,
            DialJob.to_number,
            Participant.hold_micros,
        )
        .join(Participant, Participant.id == DialJob.participant_id)
        .where(one_of(session, DialJob.id, job_ids), DialJob.status.in_(UNFINISHED_JOB))
        .with_for_update(of=DialJob)
    )
    return {row.id: row for row in rows}


def _once_per_job(endings: Sequence[Ending], unfinished: Mapping[str, Any]) -> list[Ending]:
    """The first ending of each job not final yet."""
    first: dict[str, Ending] = {}
    for e in endings:
        if e.job_id in unfinished:
            first.setdefault(e.job_id, e)
    return list(first.values())


async def _end_attempts(session: AsyncSession, endings: Sequence[Ending]) -> None:
    a = ATTEMPTS.c
    await update_rows(
        session,
        ATTEMPTS,
        [
            {
                "id": e.attempt_id,
                "status": str(
                    AttemptStatus.LOST if e.end_reason == EndReason.LOST else AttemptStatus.ENDED
                ),
                "at": e.at,
                "reason": str(e.end_reason),
                "talk": e.talk_seconds,
                **_progress_fields(e.progress),
            }
            for e in endings
        ],
        fields={
            "id": TEXT,
            "status": TEXT,
            "at": TIMESTAMP,
            "reason": TEXT,
            "talk": Integer(),
            "placed_at": TIMESTAMP,
            "provider_call_id": TEXT,
            "answered_at": TIMESTAMP,
            "answered_by": TEXT,
            "connected_call_id": TEXT,
        },
        where=lambda row: a.id == row.id,
        values=lambda row: {
            "status": row.status,
            "ended_at": row.at,
            "end_reason": row.reason,
            "talk_seconds": row.talk,
            "placed_at": func.coalesce(a.placed_at, row.placed_at),
            "provider_call_id": func.coalesce(
                row.connected_call_id, a.provider_call_id, row.provider_call_id
            ),
            "answered_at": func.coalesce(a.answered_at, row.answered_at),
            "answered_by": func.coalesce(a.answered_by, row.answered_by),
        },
    )


def _progress_fields(progress: Progress | None) -> dict[str, Any]:
    p = progress or Progress()
    return {
        "placed_at": p.placed_at,
        "provider_call_id": p.provider_call_id,
        "answered_at": p.answered_at,
        "answered_by": p.answered_by,
        "connected_call_id": p.connected_call_id,
    }


def _should_retry(policy: DialPolicy, end_reason: EndReason, attempt: int, queued_max: int) -> bool:
    """Whether the policy dials again after this end (a source's current cap over the one the
    job was queued with)."""
    retry = policy.retry
    max_attempts = policy.max_attempts or queued_max
    return bool(retry) and end_reason in retry["on"] and attempt < max_attempts


async def _requeue_jobs(session: AsyncSession, retries: list[dict[str, Any]]) -> None:
    await update_rows(
        session,
        JOBS,
        retries,
        fields={"id": TEXT, "run_at": TIMESTAMP},
        where=lambda row: JOBS.c.id == row.id,
        values=lambda row: {"status": JobStatus.WAITING, "run_at": row.run_at, "lease_owner": None},
    )


async def _finish_jobs(session: AsyncSession, finals: list[dict[str, Any]]) -> None:
    await update_rows(
        session,
        JOBS,
        finals,
        fields={"id": TEXT, "status": TEXT},
        where=lambda row: JOBS.c.id == row.id,
        values=lambda row: {"status": row.status, "lease_owner": None},
    )
