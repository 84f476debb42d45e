"""The outbox's storage side for delivery processes: claiming due deliveries, writing back
what became of them, giving back unsent ones and pruning old ones. Session first; the caller
commits."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    String,
    bindparam,
    delete,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import UTCDateTime, bulk_insert, one_of, update_rows
from outdial.webhooks.models import (
    DeliveryStatus,
    DisabledReason,
    EndpointStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from outdial.webhooks.service import disable

DELIVERIES = WebhookDelivery.__table__
ENDPOINTS = WebhookEndpoint.__table__
ATTEMPTS = WebhookAttempt.__table__
TIMESTAMP = DateTime(timezone=True)

FAILING_LIMIT = timedelta(days=5)
"""An endpoint whose every attempt has failed for this long is disabled."""
RETENTION = timedelta(days=30)
"""Finished deliveries are deleted this long after they finished, attempts this long after
they were made."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a process has leased and is to send."""

    seq: int
    attempt: int  # its number among the delivery's attempts: it fences the result
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    payload: str
    endpoint_failing: bool  # its endpoint's failure clock ran when it was claimed
    due_at: datetime  # when it was due: how late its claim came is the delivery lag


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    claimed: Claimed
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error

    @property
    def finished_at(self) -> datetime:
        return self.started_at + timedelta(milliseconds=self.duration_ms)


def next_retry(schedule: Sequence[float], *, attempt: int, failed_at: datetime) -> datetime | None:
    """When a delivery whose attempt number `attempt` failed is due again: `schedule` holds
    the delays after each failed try; None once they are spent."""
    if attempt > len(schedule):
        return None
    return failed_at + timedelta(seconds=schedule[attempt - 1])


_ACTIVE_ENDPOINTS = """
WITH RECURSIVE active(endpoint_id) AS (
    SELECT * FROM (
        SELECT endpoint_id FROM webhook_deliveries
        WHERE finished_at IS NULL ORDER BY endpoint_id LIMIT 1
    ) AS first
  UNION ALL
    SELECT (
        SELECT d.endpoint_id FROM webhook_deliveries AS d
        WHERE d.finished_at IS NULL AND d.endpoint_id > active.endpoint_id
        ORDER BY d.endpoint_id LIMIT 1
    )
    FROM active WHERE active.endpoint_id IS NOT NULL
)"""
"""The endpoints with unfinished deliveries, one index probe each (a loose index scan), not
one row read per delivery: a slow endpoint's backlog costs a claim nothing."""

_DUE_OF_ENDPOINT = """
    SELECT d.seq, d.endpoint_id, d.next_attempt_at FROM webhook_deliveries AS d
    WHERE d.endpoint_id = {endpoint} AND d.finished_at IS NULL AND d.next_attempt_at <= :now
      AND NOT EXISTS (
        SELECT 1 FROM webhook_deliveries AS earlier
        WHERE earlier.endpoint_id = d.endpoint_id AND earlier.ordering_key = d.ordering_key
          AND earlier.finished_at IS NULL AND earlier.holds_order AND earlier.seq < d.seq
        {fence}
      )
    ORDER BY d.next_attempt_at, d.seq LIMIT {room}"""
"""An endpoint's oldest due deliveries that no earlier one of the same key holds back.
(On PostgreSQL `OFFSET 0` keeps the check a lookup per row on all three columns of its
index: as an anti-join, a table without statistics yet was planned to read every earlier
row. SQLite runs it as such a lookup anyway.)"""

_CLAIM_POSTGRES = text(
    _ACTIVE_ENDPOINTS
    + """,
due AS (
    SELECT due.seq FROM active
    LEFT JOIN unnest(:busy_ids, :busy_counts) AS busy(endpoint_id, n)
      ON busy.endpoint_id = active.endpoint_id
    CROSS JOIN LATERAL ("""
    + _DUE_OF_ENDPOINT.format(
        endpoint="active.endpoint_id",
        room="GREATEST(:cap - COALESCE(busy.n, 0), 0)",
        fence="OFFSET 0",
    )
    + """) AS due
    WHERE active.endpoint_id IS NOT NULL AND COALESCE(busy.n, 0) < :cap
    ORDER BY due.next_attempt_at, due.seq
    LIMIT :limit
),
locked AS (
    -- Found by key (ARRAY(…): whatever the planner estimates). Rows another claim is
    -- taking are skipped; those it took since they were read come back in their new
    -- state (sending, due later) and are left out below.
    SELECT seq, finished_at, next_attempt_at FROM webhook_deliveries
    WHERE seq = ANY(ARRAY(SELECT seq FROM due))
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET status = 'sending', attempts = d.attempts + 1, next_attempt_at = :lease_until
FROM webhook_endpoints AS e, locked AS was
WHERE d.seq = ANY(ARRAY(
        SELECT seq FROM locked WHERE finished_at IS NULL AND next_attempt_at <= :now
    ))
  AND e.id = d.endpoint_id AND was.seq = d.seq
RETURNING d.seq, d.attempts, d.endpoint_id, e.url, e.secret, d.event_id, d.payload,
    e.failing_since IS NOT NULL, was.next_attempt_at"""
).bindparams(
    bindparam("now", type_=TIMESTAMP),
    bindparam("lease_until", type_=TIMESTAMP),
    bindparam("busy_ids", type_=ARRAY(String())),
    bindparam("busy_counts", type_=ARRAY(Integer())),
    bindparam("cap", type_=Integer()),
    bindparam("limit", type_=Integer()),
)
_ACTIVE_SQLITE = text(
    _ACTIVE_ENDPOINTS + "\nSELECT endpoint_id FROM active WHERE endpoint_id IS NOT NULL"
)
_DUE_SQLITE = (
    text(_DUE_OF_ENDPOINT.format(endpoint=":endpoint_id", room=":room", fence=""))
    .bindparams(bindparam("now", type_=UTCDateTime()))
    .columns(next_attempt_at=UTCDateTime())
)


async def claim(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    endpoint_busy: Mapping[str, int],
    endpoint_cap: int,
) -> list[Claimed]:
    """Lease up to `limit` due deliveries, oldest due first, at most `endpoint_cap` less
    `endpoint_busy[id]` (those this process is sending) for each endpoint, so that one
    endpoint's backlog can neither take every connection nor slow the claims; none while
    an earlier delivery with the same ordering key to the same endpoint is unfinished and
    has not failed yet.

    On PostgreSQL this is one statement: the rows are locked `FOR UPDATE SKIP LOCKED` and
    leased (status sending, due again when the lease ends), so concurrent processes never
    take the same delivery; each claim counts its attempt. (A disabled endpoint's
    deliveries are due at no time, so they are never chosen.)"""
    if limit <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = await session.execute(
            _CLAIM_POSTGRES,
            {
                "now": now,
                "lease_until": now + lease,
                "busy_ids": list(endpoint_busy),
                "busy_counts": list(endpoint_busy.values()),
                "cap": endpoint_cap,
                "limit": limit,
            },
        )
    else:
        rows = await _claim_sqlite(
            session, now=now, lease=lease, limit=limit, busy=endpoint_busy, cap=endpoint_cap
        )
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.seq)


async def _claim_sqlite(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    busy: Mapping[str, int],
    cap: int,
) -> list[tuple[Any, ...]]:
    """`claim` in steps (SQLite has no LATERAL; its queries are calls within this process,
    and its writers take turns, so nothing is locked row by row)."""
    due = []
    for endpoint_id in await session.scalars(_ACTIVE_SQLITE):
        room = cap - busy.get(endpoint_id, 0)
        if room > 0:
            found = await session.execute(
                _DUE_SQLITE, {"now": now, "room": room, "endpoint_id": endpoint_id}
            )
            due += list(found)
    due_at = {seq: at for seq, _, at in sorted(due, key=lambda row: (row[2], row[0]))[:limit]}
    chosen = list(due_at)
    if not chosen:
        return []
    d = DELIVERIES.c
    leased = (
        await session.execute(
            update(DELIVERIES)
            .where(d.seq.in_(chosen))
            .values(
                status=DeliveryStatus.SENDING, attempts=d.attempts + 1, next_attempt_at=now + lease
            )
            .returning(d.seq, d.attempts, d.endpoint_id, d.event_id, d.payload)
        )
    ).all()
    e = ENDPOINTS.c
    endpoints = {
        row.id: row
        for row in await session.execute(
            select(e.id, e.url, e.secret, e.failing_since).where(
                e.id.in_({row.endpoint_id for row in leased})
            )
        )
    }
    return [
        (
            seq,
            attempt,
            endpoint_id,
            endpoints[endpoint_id].url,
            endpoints[endpoint_id].secret,
            event_id,
            payload,
            endpoints[endpoint_id].failing_since is not None,
            due_at[seq],
        )
        for seq, attempt, endpoint_id, event_id, payload in leased
    ]


def _fenced(row: Any) -> Any:
    """The delivery a result is for, as long as it is still in the attempt that produced it."""
    d = DELIVERIES.c
    return (d.seq == row.seq) & (d.attempts == row.attempt) & (d.status == DeliveryStatus.SENDING)


async def record(
    session: AsyncSession, outcomes: Sequence[Outcome], *, schedule: Sequence[float]
) -> None:
    """Write back what became of attempts: delivered, due again on `schedule`, or finished
    as failed (schedule spent, or 410); log every attempt; keep each endpoint's failure clock
    and disable those that answered 410 or have failed for 5 days. A result whose delivery
    was claimed again since (its process outlived its lease) changes nothing but the log."""
    if not outcomes:
        return
    results = []
    attempts = []
    for o in outcomes:
        retry_at = None
        if not o.delivered and o.status_code != 410:
            retry_at = next_retry(schedule, attempt=o.claimed.attempt, failed_at=o.finished_at)
        if o.delivered:
            status = DeliveryStatus.DELIVERED
        else:
            status = DeliveryStatus.PENDING if retry_at else DeliveryStatus.FAILED
        results.append(
            {
                "seq": o.claimed.seq,
                "attempt": o.claimed.attempt,
                "status": str(status),
                "next_at": retry_at,
                "finished_at": None if retry_at else o.finished_at,
                # A failed delivery no longer holds back later ones of its key.
                "delivered": o.delivered,
            }
        )
        attempts.append(
            {
                "delivery_seq": o.claimed.seq,
                "attempt_no": o.claimed.attempt,
                "started_at": o.started_at,
                "duration_ms": o.duration_ms,
                "status_code": o.status_code,
                "error": o.error,
                "response": o.response,
                "next_attempt_at": retry_at,
            }
        )
    d = DELIVERIES.c
    await update_rows(
        session,
        DELIVERIES,
        results,
        fields={
            "seq": BigInteger(),
            "attempt": Integer(),
            "status": String(),
            "next_at": TIMESTAMP,
            "finished_at": TIMESTAMP,
            "delivered": Boolean(),
        },
        where=_fenced,
        values=lambda row: {
            "status": row.status,
            "next_attempt_at": row.next_at,
            "finished_at": row.finished_at,
            "holds_order": d.holds_order & row.delivered,
        },
    )
    await bulk_insert(session, ATTEMPTS, attempts)  # type: ignore[arg-type]
    await _keep_failure_clocks(session, outcomes)
    failed = [row for row in results if not row["delivered"]]
    if failed:
        # A delivery that failed while its endpoint was disabled waits for it to be enabled.
        await session.execute(
            update(DELIVERIES)
            .where(
                one_of(session, d.seq, [row["seq"] for row in failed]),
                d.finished_at.is_(None),
                d.endpoint_id.in_(
                    select(ENDPOINTS.c.id).where(ENDPOINTS.c.status == EndpointStatus.DISABLED)
                ),
            )
            .values(next_attempt_at=None)
        )


async def _keep_failure_clocks(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """Start an endpoint's failure clock at its first failure, stop it at a success (its
    latest outcome in this batch decides), and disable endpoints as `record` says."""
    latest: dict[str, Outcome] = {}
    first_failure: dict[str, datetime] = {}
    first_failure_seen: set[str] = set()
    gone: set[str] = set()
    for o in sorted(outcomes, key=lambda o: o.finished_at):
        endpoint = o.claimed.endpoint_id
        latest[endpoint] = o
        if o.delivered:
            first_failure.pop(endpoint, None)
        else:
            first_failure.setdefault(endpoint, o.finished_at)
            first_failure_seen.add(endpoint)
        if o.status_code == 410:
            gone.add(endpoint)
    e = ENDPOINTS.c
    # Only endpoints known to be failing need their clock stopped: a success is the rule.
    suspect = {o.claimed.endpoint_id for o in outcomes if o.claimed.endpoint_failing}
    recovered = [
        endpoint
        for endpoint, o in latest.items()
        if o.delivered and (endpoint in suspect or endpoint in first_failure_seen)
    ]
    if recovered:
        await session.execute(
            update(ENDPOINTS)
            .where(one_of(session, e.id, recovered), e.failing_since.is_not(None))
            .values(failing_since=None)
        )
    if not first_failure:
        return
    # One statement for all: the batch's earliest first failure stands for each endpoint's
    # (a batch spans well under a second; the limit is 5 days).
    await session.execute(
        update(ENDPOINTS)
        .where(one_of(session, e.id, list(first_failure)), e.failing_since.is_(None))
        .values(failing_since=min(first_failure.values()))
    )
    now = max(o.finished_at for o in outcomes)
    expired = list(
        await session.scalars(
            select(e.id).where(
                one_of(session, e.id, list(first_failure)),
                e.status == EndpointStatus.ENABLED,
                e.failing_since <= now - FAILING_LIMIT,
            )
        )
    )
    await disable(session, endpoint_ids=sorted(gone), reason=DisabledReason.GONE)
    await disable(session, endpoint_ids=expired, reason=DisabledReason.FAILING)


async def release(session: AsyncSession, claimed: Sequence[Claimed], *, now: datetime) -> None:
    """Give back deliveries leased but not sent (a stopping process): due again now."""
    rows = [{"seq": c.seq, "attempt": c.attempt} for c in claimed]
    await update_rows(
        session,
        DELIVERIES,
        rows,
        fields={"seq": BigInteger(), "attempt": Integer()},
        where=_fenced,
        values=lambda row: {"status": DeliveryStatus.PENDING, "next_attempt_at": now},
    )


async def prune(session: AsyncSession, *, now: datetime, limit: int = 5000) -> int:
    """Delete up to `limit` deliveries finished more than 30 days ago and up to `limit`
    attempts made more than 30 days ago (the log keeps 30 days, whatever became of the
    delivery); answers how many rows went."""
    d = DELIVERIES.c
    a = ATTEMPTS.c
    cutoff = now - RETENTION
    old_deliveries = select(d.seq).where(d.finished_at < cutoff).limit(limit)
    old_attempts = select(a.delivery_seq, a.attempt_no).where(a.started_at < cutoff).limit(limit)
    pruned = await session.execute(
        delete(DELIVERIES).where(d.seq.in_(old_deliveries.scalar_subquery()))
    )
    pruned_attempts = await session.execute(
        delete(ATTEMPTS).where(tuple_(a.delivery_seq, a.attempt_no).in_(old_attempts))
    )
    return pruned.rowcount + pruned_attempts.rowcount  # type: ignore[attr-defined]
