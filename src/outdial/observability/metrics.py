"""Every Prometheus metric outdial exposes, and the small functions the rest of the code calls
to move them. Each process (API, dialer, or both in `serve`) exposes its own values at
`/metrics`; Prometheus adds them up across processes (see the README)."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("outdial.metrics")

DIAL_OUTCOMES = (
    "answered",
    "voicemail",
    "busy",
    "no_answer",
    "rejected",
    "invalid_number",
    "carrier_error",
    "dnc",
    "canceled",
    "lost",
    "agent_unavailable",
    "not_permitted",
)
"""The contract's participant end reasons: one dial outcome each."""
QUEUE_STATES = ("waiting", "active", "completed", "failed", "canceled")
WEBHOOK_RESULTS = ("delivered", "failed")

DIALS = Counter(
    "outdial_dials",
    "Dial attempts that came to an end, by outcome (the participant's end reason).",
    ["outcome"],
)
QUEUE_JOBS = Gauge(
    "outdial_queue_jobs",
    "Dial jobs in the queue by state, all tenants (read from the database every few seconds).",
    ["state"],
)
QUEUE_JOBS_AGE = Gauge(
    "outdial_queue_jobs_age_seconds",
    "How old the outdial_queue_jobs counts are.",
)
DIAL_LATENCY = Histogram(
    "outdial_dial_latency_seconds",
    "From the moment a dial was due to the moment the provider was asked to place it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
LIVE_CALLS = Gauge("outdial_live_calls", "Calls this process has placed and not yet seen end.")
MEDIA_STREAMS = Gauge("outdial_media_streams", "Agent media streams open in this process.")
PROVIDER_CIRCUIT_OPEN = Gauge(
    "outdial_provider_circuit_open",
    "1 while this dialer's circuit breaker holds dials back from a telephony provider that "
    "stopped taking them (open or probing), 0 while it dials as usual.",
    ["provider"],
)
WEBHOOK_DELIVERIES = Counter(
    "outdial_webhook_deliveries",
    "Webhook delivery attempts, by result (delivered: a 2xx; failed: anything else).",
    ["result"],
)
WEBHOOK_LAG = Gauge(
    "outdial_webhook_lag_seconds",
    "How long the oldest webhook delivery that is due has been waiting to be sent.",
)
HTTP_REQUESTS = Counter(
    "outdial_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "outdial_http_request_duration_seconds",
    "How long requests took to answer, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

# Series that exist from the start read 0 rather than being absent (rate() needs them).
for _outcome in DIAL_OUTCOMES:
    DIALS.labels(_outcome)
for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)


# --- what the dialer, the media relay and the webhook worker call --------------------------


def record_dial_outcome(outcome: str) -> None:
    """Count one dial attempt that ended, with the participant's end reason (`answered`,
    `busy`, `no_answer`, …). Call it once per attempt, where the attempt is settled."""
    DIALS.labels(outcome).inc()


def observe_dial_latency(seconds: float) -> None:
    """Record how late a dial was placed: from its due time (the job's `run_at`, or its
    pacing slot if later) to the moment the provider was asked to dial. Never negative."""
    DIAL_LATENCY.observe(max(0.0, seconds))


def live_calls_changed(delta: int) -> None:
    """+1 when this process places a call, -1 when that call ends (whatever the outcome)."""
    LIVE_CALLS.inc(delta)


def media_streams_changed(delta: int) -> None:
    """+1 when an agent media stream opens in this process, -1 when it closes."""
    MEDIA_STREAMS.inc(delta)


def set_provider_circuit_open(provider: str, is_open: bool) -> None:
    """The dialer's circuit breaker for `provider` holds dials back (True) or not (False)."""
    PROVIDER_CIRCUIT_OPEN.labels(provider).set(1 if is_open else 0)


def record_webhook_delivery(result: str) -> None:
    """Count one delivery attempt: `delivered` (a 2xx answer) or `failed` (anything else)."""
    WEBHOOK_DELIVERIES.labels(result).inc()


def set_webhook_lag(seconds: float) -> None:
    """How long the oldest due delivery has waited (0 when none is due); the webhook worker
    sets it each time it looks for due deliveries."""
    WEBHOOK_LAG.set(max(0.0, seconds))


# --- HTTP requests ------------------------------------------------------------------------


class RequestCounter:
    """Pure ASGI middleware counting answered requests by route *template* (`/v1/calls/{call_id}`,
    never the raw path, so ids do not explode the series); paths no route matches count as
    `unmatched`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started is answered 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method, route = scope["method"], route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's path template with the prefixes it was included under
    (`/v1/calls/{call_id}`): the route knows its own template, and the prefixes are what the
    request path has before the part the route matched."""
    template = getattr(scope.get("route"), "path_format", None)
    if template is None:
        return "unmatched"
    params = scope.get("path_params", {})
    try:
        matched = template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template
    path: str = scope["path"]
    return path.removesuffix(matched) + template if path.endswith(matched) else template


# --- the queue gauge ----------------------------------------------------------------------

JobCounter = Callable[[AsyncSession], Awaitable[dict[str, int]]]


async def count_jobs_by_state(session: AsyncSession) -> dict[str, int]:
    """Every tenant's dial jobs per state: one GROUP BY over the status index."""
    from outdial.dialer.models import DialJob

    rows = await session.execute(select(DialJob.status, func.count()).group_by(DialJob.status))
    return {status: count for status, count in rows}


class QueueGauge:
    """Keeps `outdial_queue_jobs` from the database without making a scrape wait for a count:
    a scrape reads the last counts and, when they are older than `max_age` seconds, starts
    one recount in the background (never two at once). With nobody scraping, the database
    is not asked at all."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_age: float,
        count: JobCounter = count_jobs_by_state,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_age = max_age
        self._count = count
        self._counted_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def refresh_if_stale(self) -> None:
        """Start a recount if the counts are old and none is running; returns at once."""
        now = time.monotonic()
        stale = self._counted_at is None or now - self._counted_at >= self._max_age
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self.refresh())
        if self._counted_at is not None:
            QUEUE_JOBS_AGE.set(now - self._counted_at)

    async def refresh(self) -> None:
        """Count now and publish the counts."""
        try:
            async with self._sessionmaker() as session:
                counts = await self._count(session)
        except Exception:
            log.exception("counting the dial queue for /metrics failed")
            return
        for state in {*QUEUE_STATES, *counts}:
            QUEUE_JOBS.labels(state).set(counts.get(state, 0))
        self._counted_at = time.monotonic()
        QUEUE_JOBS_AGE.set(0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
