"""The delivery worker: sends the outbox's deliveries, signed per Standard Webhooks, and
writes back what became of each.

One loop, in rounds: each round writes the outcomes of the sends that ended since the last
one and claims due deliveries (leased in the database, so any number of processes can run
on PostgreSQL) for the connection slots that are free, each endpoint getting at most
`webhook_endpoint_concurrency`, in one transaction; then starts one task per delivery. A
send that ends wakes the loop, so under load rounds follow each other (no closer than
`MIN_ROUND_SECONDS`) and batch what accumulated meanwhile, and the next delivery of a call
goes out in the round that writes the one before it. A receiver that never answers holds
one slot for `webhook_timeout_seconds`, nothing more. A process killed mid-send leaves its
leases to expire (twice the timeout); another then sends those deliveries again, with the
same `webhook-id`. Old deliveries are pruned hourly, beside the loop. The process runs
niced (`NICENESS`): delivery is judged by its lag, and yields the CPU to dialers beside it."""

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from outdial import __version__
from outdial import observability as obs
from outdial.config import Settings, get_settings
from outdial.db import create_engine, create_sessionmaker, utcnow
from outdial.process import run_process
from outdial.signing import signature_headers
from outdial.webhooks import deliveries
from outdial.webhooks.addresses import CheckedResolver, Resolver, refused_literal, resolve
from outdial.webhooks.deliveries import Claimed, Outcome
from outdial.webhooks.service import lease_seconds

log = logging.getLogger("outdial.webhooks")

USER_AGENT = f"outdial-webhooks/{__version__}"
CLAIM_BATCH = 500
SHUTDOWN_GRACE_SECONDS = 5.0
"""On stop, sends still running after this long are abandoned and their deliveries given
back (due at once: another process may send them, with the same webhook-id)."""
PRUNE_EVERY_SECONDS = 3600.0
REFUSED_DATA = (
    IntegrityError,
    DataError,
    # Bulk inserts go through the drivers themselves, so their own errors too.
    sqlite3.IntegrityError,
    sqlite3.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
)
"""Errors that writing the same outcomes again would raise again."""
MIN_ROUND_SECONDS = 0.01
"""The shortest time from one round's start to the next's. A round (a transaction: write the
outcomes, claim) costs nearly as much for one delivery as for a hundred, and begun as each
send ended, rounds at a moderate rate carried one or two each. At most 100 rounds a second
still sends 64 at a time to an endpoint 100 times a second (but one call's events, sent one
after the other, at most 100 a second), and adds at most 10 ms to a delivery's lag."""
RETRY_ROUND_SECONDS = 1.0
"""After a round the database refused, the next is tried this much later."""
NICENESS = 10
"""How far below the priority it was started with a delivery process runs. Delivery is
background work judged by its lag: where it shares CPUs with dialers (and the database), a
busy dialer keeps its CPU and deliveries catch up in what it leaves, instead of each taking
half. Only contention is affected: on an idle CPU a niced process runs at full speed."""
RESPONSE_EXCERPT_BYTES = 500
MAX_BODY_BYTES = 64 * 1024
"""A receiver's answer is read up to this much, so that its connection can be reused."""


class DeliveryWorker:
    """One delivery process's engine. Run any number against PostgreSQL; one against SQLite
    (more would take turns: SQLite writes one transaction at a time)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        resolver: Resolver = resolve,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.lease = timedelta(seconds=lease_seconds(settings))
        self.timeout = settings.webhook_timeout_seconds
        self.endpoint_cap = settings.webhook_endpoint_concurrency
        self.schedule = list(settings.webhook_retry_schedule)
        self._http: aiohttp.ClientSession | None = None
        self._in_flight: dict[int, Claimed] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._sends: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._wake = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then let sends finish for a few seconds, give back
        what is still unsent and write every outcome."""
        async with self._client() as http:
            self._http = http
            pruner = asyncio.create_task(self._prune_loop())
            waker = asyncio.create_task(self._wake_on(stop))
            try:
                while not stop.is_set():
                    began = time.monotonic()
                    asked = self._room()
                    claimed = await self._round(claim=asked)
                    if claimed is None:  # the database refused: try again in a while
                        await asyncio.sleep(RETRY_ROUND_SECONDS)
                        continue
                    if not (asked and claimed == asked):  # else more may be due at once
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                self._wake.wait(), self.settings.webhook_poll_seconds
                            )
                        self._wake.clear()
                    # Rounds no closer than this: the sends that end meanwhile share one.
                    await asyncio.sleep(max(0.0, began + MIN_ROUND_SECONDS - time.monotonic()))
            finally:
                waker.cancel()
                pruner.cancel()
                await self._stop_sending()

    async def deliver_due(self) -> list[Outcome]:
        """One round, then the outcomes of what it claimed written and answered. For tests
        and tools; `run` is the service."""
        async with self._client() as http:
            self._http = http
            await self._round(claim=self._room())
            await asyncio.gather(*self._sends)
            outcomes = list(self._outcomes)
            await self._round(claim=0)
            return outcomes

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: httpx's connection pool (httpcore 1.0) costs more per
        # request the more are in flight, and bounded the rate near 100/s here (bench/RESULTS).
        connector = aiohttp.TCPConnector(
            limit=self.settings.webhook_concurrency,
            limit_per_host=0,  # endpoints are bounded by their claims instead
            resolver=CheckedResolver(
                allow_private=self.settings.webhook_allow_private_urls, resolver=self.resolver
            ),
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    # --- rounds --------------------------------------------------------------------------

    def _room(self) -> int:
        return max(0, min(CLAIM_BATCH, self.settings.webhook_concurrency - len(self._in_flight)))

    async def _round(self, *, claim: int, release: list[Claimed] | None = None) -> int | None:
        """Write the outcomes gathered so far, give back `release`, and claim up to `claim`
        due deliveries and start sending them, in one transaction; answer how many were
        claimed, or None if the database refused (the outcomes are then kept for the next
        round, and nothing is claimed)."""
        outcomes, self._outcomes = self._outcomes, []
        busy = {endpoint: n for endpoint, n in self._per_endpoint.items() if n > 0}
        self._per_endpoint = Counter(busy)  # endpoints done with leave it
        try:
            async with self.sessionmaker() as session, session.begin():
                await deliveries.record(session, outcomes, schedule=self.schedule)
                if release:
                    await deliveries.release(session, release, now=self.clock())
                claimed = await deliveries.claim(
                    session,
                    now=self.clock(),
                    lease=self.lease,
                    limit=claim,
                    endpoint_busy=busy,
                    endpoint_cap=self.endpoint_cap,
                )
        except REFUSED_DATA:
            # Outcomes the database will never take would stop every round after: dropped,
            # their deliveries are sent again when their leases end.
            log.exception("a delivery round failed; %d outcomes dropped", len(outcomes))
            return None
        except Exception:  # kept and retried: a lost outcome means a delivery sent again
            log.exception("a delivery round failed (%d outcomes kept)", len(outcomes))
            self._outcomes[:0] = outcomes
            return None
        self._report_lag(claimed, asked=claim)
        for delivery in claimed:
            self._start(delivery)
        return len(claimed)

    def _report_lag(self, claimed: list[Claimed], *, asked: int) -> None:
        # A claim takes the oldest due first: its oldest is how late sending runs. A claim
        # with room that found nothing due means nothing is waiting; one without room says
        # nothing, so the gauge keeps its last reading while every slot is busy.
        if claimed:
            oldest = min(c.due_at for c in claimed)
            obs.set_webhook_lag((self.clock() - oldest).total_seconds())
        elif asked:
            obs.set_webhook_lag(0.0)

    # --- sending -------------------------------------------------------------------------

    def _start(self, claimed: Claimed) -> None:
        self._in_flight[claimed.seq] = claimed
        self._per_endpoint[claimed.endpoint_id] += 1
        task = asyncio.create_task(self._send(claimed))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, claimed: Claimed) -> None:
        started_at = self.clock()
        began = time.perf_counter()
        status_code: int | None = None
        response: str | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                status_code, response = await self._post(claimed)
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except Exception as exc:  # every attempt ends in an outcome, whatever went wrong
            error = f"{type(exc).__name__}: {exc}"[:500]
            if not isinstance(exc, aiohttp.ClientError | OSError):
                log.exception("sending webhook delivery %s failed unexpectedly", claimed.seq)
        self._finish(
            Outcome(
                claimed=claimed,
                started_at=started_at,
                duration_ms=round((time.perf_counter() - began) * 1000),
                status_code=status_code,
                error=error,
                response=response,
            )
        )

    async def _post(self, claimed: Claimed) -> tuple[int, str | None]:
        """POST the delivery; answer the status and, unless 2xx, the answer's first bytes."""
        assert self._http is not None
        if not self.settings.webhook_allow_private_urls:
            refused_literal(urlsplit(claimed.url).hostname or "")
        headers = signature_headers(
            claimed.secret, msg_id=claimed.event_id, payload=claimed.payload
        )
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        async with self._http.post(
            claimed.url,
            data=claimed.payload.encode(),
            headers=headers,
            allow_redirects=False,  # a redirect is an answer other than 2xx: a failure
        ) as answer:
            body = bytearray()
            # Read to the end (up to a limit) so that the connection can be reused.
            while chunk := await answer.content.read(MAX_BODY_BYTES):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    break
            if 200 <= answer.status < 300:
                return answer.status, None
            excerpt = bytes(body[:RESPONSE_EXCERPT_BYTES]).decode(errors="replace")
            return answer.status, excerpt or None

    def _finish(self, outcome: Outcome) -> None:
        claimed = outcome.claimed
        del self._in_flight[claimed.seq]
        self._per_endpoint[claimed.endpoint_id] -= 1
        obs.record_webhook_delivery("delivered" if outcome.delivered else "failed")
        self._outcomes.append(outcome)
        self._wake.set()

    async def _stop_sending(self) -> None:
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=SHUTDOWN_GRACE_SECONDS)
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        # Their leases would expire; given back, they are due again at once.
        if await self._round(claim=0, release=list(self._in_flight.values())) is None:
            log.error("stopping without writing %d outcomes", len(self._outcomes))

    async def _prune_loop(self) -> None:
        while True:
            try:
                async with self.sessionmaker() as session, session.begin():
                    pruned = await deliveries.prune(session, now=self.clock())
            except (SQLAlchemyError, OSError):
                log.exception("pruning old webhook deliveries failed")
                pruned = 0
            if pruned:
                log.info("pruned %d webhook deliveries and attempts over 30 days old", pruned)
                continue  # there may be more
            await asyncio.sleep(PRUNE_EVERY_SECONDS)


def delivery_engine(database_url: str) -> AsyncEngine:
    """The delivery process's own connections. They commit without waiting for the disk
    (PostgreSQL `synchronous_commit = off`, SQLite `synchronous = NORMAL`): a crash of the
    database server may then forget its last claims and results, which only sends those
    deliveries again, with the same webhook-id; no event is lost, for events are written
    by their callers' own (durable) transactions."""
    if make_url(database_url).get_backend_name().startswith("postgres"):
        return create_engine(
            database_url, connect_args={"server_settings": {"synchronous_commit": "off"}}
        )
    engine = create_engine(database_url)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


async def run_webhooks(settings: Settings, stop: asyncio.Event) -> None:
    """Run one delivery process against the configured database until `stop` is set."""
    engine = delivery_engine(settings.database_url)
    try:
        await DeliveryWorker(create_sessionmaker(engine), settings).run(stop)
    finally:
        await engine.dispose()


def main() -> None:
    """`outdial webhooks`: deliver until SIGTERM or SIGINT, then stop gracefully, at a lower
    CPU priority than the processes beside it (`NICENESS`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if hasattr(os, "nice"):  # not on Windows
        os.nice(NICENESS)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_webhooks(get_settings(), stop)

    run_process(serve())  # on uvloop, which runs the HTTP clients faster
