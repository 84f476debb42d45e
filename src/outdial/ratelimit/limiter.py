"""Rate limits per API key and per client address, and a lockout for addresses that keep
presenting bad keys (issue 10, defect 7).

Every authenticated request passes `RateLimiter.check` before its key is looked up: one
statement that counts the request against its key's bucket and its address's bucket and reads
the address's failed-authentication bucket. A request over any limit answers 429
`rate_limited` with `Retry-After`. A request whose key turns out unknown then counts against
its address's failure bucket (`RateLimiter.failed`); past that limit every request from the
address is refused, whatever its key, until its failures age out.

Counts are sliding-window counters (the current fixed window's hits plus the previous
window's, weighted by how much of it still overlaps the sliding window), as Cloudflare
describes them: two integers a bucket, no per-request rows. On PostgreSQL they live in one
UNLOGGED table shared by every API process, each bucket upserted by a single autocommit
statement on its own pooled connection, so the request's own transaction never holds a
counter's row lock. On SQLite (one process by design) they live in the process's memory.

Rejected requests count too: a client that keeps hammering stays limited until it slows down.
"""

import hashlib
import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outdial.config import Settings
from outdial.error_handlers import ErrorResponse
from outdial.errors import OutdialError, error_body

FAILURE_WINDOW_SECONDS = 60
_PRUNE_EVERY = 1000
"""Stale counters are deleted once every this many checks (per process)."""


class RateLimited(OutdialError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: Any) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


RATE_LIMITED_RESPONSE = {
    429: {
        "model": ErrorResponse,
        "description": "Too many requests (`rate_limited`): wait the `Retry-After` seconds.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer"},
            }
        },
    }
}
"""OpenAPI `responses=` entry for every rate-limited route."""


def install_rate_limit_handler(app: FastAPI) -> None:
    """Render `RateLimited` as the contract's error JSON, with its `Retry-After` header."""

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            exc.status_code,
            headers={"Retry-After": str(exc.retry_after)},
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    scope: str
    """What is limited, as the 429's details name it: `key`, `ip` or `auth_failures`."""
    limit: int
    window: int
    """Window length in seconds."""


@dataclass(frozen=True, slots=True)
class Count:
    """A bucket's counters as stored: hits in window `window_index` and in the one before."""

    window_index: int
    hits: int
    previous_hits: int


def estimate(count: Count, *, now: float, window: int) -> float:
    """Hits in the sliding window that ends `now` (the previous fixed window's hits weighted by
    how much of it the sliding window still covers)."""
    current = int(now // window)
    hits, previous = count.hits, count.previous_hits
    if count.window_index < current:  # not touched since: its counts have aged
        previous = hits if count.window_index == current - 1 else 0
        hits = 0
    elapsed = now / window - current
    return previous * (1 - elapsed) + hits


def seconds_until_allowed(count: Count, *, now: float, window: int, limit: int) -> float:
    """How long until one more request fits under `limit`, if no other arrives meanwhile."""
    current = int(now // window)
    hits, previous = count.hits, count.previous_hits
    if count.window_index < current:
        previous = hits if count.window_index == current - 1 else 0
        hits = 0
    elapsed = now / window - current
    room = limit - 1
    if hits <= room:  # within this window, once enough of the previous one has slid out
        if previous == 0:
            return 0.0
        needed = max(0.0, 1 - (room - hits) / previous)
        return max(0.0, needed - elapsed) * window
    # Only in the next window, where this window's hits become the weighted previous ones.
    needed = max(0.0, 1 - room / hits) if hits else 0.0
    return (1 - elapsed + needed) * window


class Counters(Protocol):
    async def hit(
        self, hits: Sequence[Bucket], reads: Sequence[Bucket], *, now: float
    ) -> dict[str, Count]:
        """Add one hit to each of `hits` and answer their counts, with those of `reads`
        (absent when a bucket has never been hit)."""
        ...


class MemoryCounters:
    """Counters in this process's memory: for SQLite, whose deployments are one process."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[Count, int]] = {}
        self._checks = 0

    async def hit(
        self, hits: Sequence[Bucket], reads: Sequence[Bucket], *, now: float
    ) -> dict[str, Count]:
        self._checks += 1
        if self._checks % _PRUNE_EVERY == 0:
            self._counts = {k: v for k, v in self._counts.items() if v[1] >= now}
        found = {}
        for bucket in hits:
            stored = self._counts.get(bucket.name)
            count = _added(stored[0] if stored else None, int(now // bucket.window))
            self._counts[bucket.name] = (count, _expires(now, bucket.window))
            found[bucket.name] = count
        for bucket in reads:
            stored = self._counts.get(bucket.name)
            if stored is not None:
                found[bucket.name] = stored[0]
        return found


def _added(count: Count | None, window_index: int) -> Count:
    """One hit added in `window_index`: what the database's upsert does (see below)."""
    if count is None:
        return Count(window_index, 1, 0)
    if window_index <= count.window_index:
        return Count(count.window_index, count.hits + 1, count.previous_hits)
    previous = count.hits if window_index == count.window_index + 1 else 0
    return Count(window_index, 1, previous)


def _expires(now: float, window: int) -> int:
    return (int(now // window) + 2) * window


# One statement: upsert the hit buckets (in order: no two requests lock two rows in opposite
# orders) and read the others. A window index older than the row's (another process's clock
# a little behind) counts into the row's window rather than resetting it.
_HIT_SQL = text(
    """
WITH hit AS (
    INSERT INTO rate_limit_counters AS c (bucket, window_index, hits, previous_hits, expires_at)
    SELECT bucket, window_index, 1, 0, expires_at
    FROM unnest(CAST(:buckets AS text[]), CAST(:windows AS bigint[]), CAST(:expires AS bigint[]))
        AS h(bucket, window_index, expires_at)
    ON CONFLICT (bucket) DO UPDATE SET
        previous_hits = CASE
            WHEN excluded.window_index <= c.window_index THEN c.previous_hits
            WHEN excluded.window_index = c.window_index + 1 THEN c.hits
            ELSE 0 END,
        hits = CASE WHEN excluded.window_index <= c.window_index THEN c.hits + 1 ELSE 1 END,
        window_index = GREATEST(c.window_index, excluded.window_index),
        expires_at = GREATEST(c.expires_at, excluded.expires_at)
    RETURNING c.bucket, c.window_index, c.hits, c.previous_hits
)
SELECT bucket, window_index, hits, previous_hits FROM hit
UNION ALL
SELECT bucket, window_index, hits, previous_hits FROM rate_limit_counters
WHERE bucket = ANY(CAST(:reads AS text[]))
"""
)
_PRUNE_SQL = text("DELETE FROM rate_limit_counters WHERE expires_at < :now")


class DatabaseCounters:
    """Counters in PostgreSQL, shared by every API process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._checks = 0

    async def hit(
        self, hits: Sequence[Bucket], reads: Sequence[Bucket], *, now: float
    ) -> dict[str, Count]:
        self._checks += 1
        params = {
            "buckets": [b.name for b in hits],
            "windows": [int(now // b.window) for b in hits],
            "expires": [_expires(now, b.window) for b in hits],
            "reads": [b.name for b in reads],
        }
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_HIT_SQL, params)).all()
            if self._checks % _PRUNE_EVERY == 0:
                await conn.execute(_PRUNE_SQL, {"now": int(now)})
        return {row.bucket: Count(row.window_index, row.hits, row.previous_hits) for row in rows}


@dataclass(frozen=True, slots=True)
class Limits:
    secret_key: int
    publishable_key: int
    ip: int
    auth_failures: int
    """Requests per `window` seconds for the first three, failures per minute for the last.
    0 turns a limit off."""
    window: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(
            secret_key=settings.rate_limit_per_secret_key,
            publishable_key=settings.rate_limit_per_publishable_key,
            ip=settings.rate_limit_per_ip,
            auth_failures=settings.auth_failures_per_ip,
            window=settings.rate_limit_window_seconds,
        )


class RateLimiter:
    """Checks each request against its key's and its address's limits (see the module)."""

    def __init__(self, counters: Counters, limits: Limits) -> None:
        self._counters = counters
        self._limits = limits

    async def check(self, *, address: str, token: str | None, now: float | None = None) -> None:
        """Count a request from `address` presenting `token` (None: no key); raise
        `RateLimited` if it is over a limit or the address is locked out."""
        now = time.time() if now is None else now
        hits = [b for b in (self._key_bucket(token), self._ip_bucket(address)) if b is not None]
        reads = [b for b in (self._failure_bucket(address),) if b is not None]
        if not hits and not reads:
            return
        counts = await self._counters.hit(hits, reads, now=now)
        over = [
            (b, counts[b.name])
            for b in (*reads, *hits)  # a lockout first: it says the most
            if b.name in counts
            and estimate(counts[b.name], now=now, window=b.window)
            - (1 if b in hits else 0)  # this request's own hit
            >= b.limit
        ]
        if not over:
            return
        bucket = over[0][0]
        wait = max(
            seconds_until_allowed(c, now=now, window=b.window, limit=b.limit) for b, c in over
        )
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(
            _MESSAGES[bucket.scope],
            retry_after=retry_after,
            details={
                "scope": bucket.scope,
                "limit": bucket.limit,
                "window_seconds": bucket.window,
                "retry_after_seconds": retry_after,
            },
        )

    async def failed(self, *, address: str, now: float | None = None) -> None:
        """Count a failed authentication from `address` towards its lockout."""
        bucket = self._failure_bucket(address)
        if bucket is not None:
            await self._counters.hit([bucket], [], now=time.time() if now is None else now)

    def _key_bucket(self, token: str | None) -> Bucket | None:
        if not token:
            return None
        if token.startswith("sb_publishable_"):
            limit = self._limits.publishable_key
        elif token.startswith("sb_secret_"):
            limit = self._limits.secret_key
        else:
            return None  # refused without a look-up; its address pays for it
        if not limit:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()[:32]
        return Bucket("key:" + digest, "key", limit, self._limits.window)

    def _ip_bucket(self, address: str) -> Bucket | None:
        if not self._limits.ip:
            return None
        return Bucket("ip:" + address, "ip", self._limits.ip, self._limits.window)

    def _failure_bucket(self, address: str) -> Bucket | None:
        if not self._limits.auth_failures:
            return None
        return Bucket(
            "authfail:" + address,
            "auth_failures",
            self._limits.auth_failures,
            FAILURE_WINDOW_SECONDS,
        )


_MESSAGES = {
    "key": "Too many requests with this API key; slow down and retry after Retry-After seconds.",
    "ip": "Too many requests from this address; slow down and retry after Retry-After seconds.",
    "auth_failures": "Too many requests with unknown API keys from this address; it is locked "
    "out until Retry-After seconds have passed.",
}


def client_address(request: Request) -> str:
    """Who is asking, for per-address limits: the peer's address (behind a reverse proxy,
    uvicorn puts the client's there from X-Forwarded-For when the proxy is trusted:
    FORWARDED_ALLOW_IPS). IPv6 clients are grouped by their /64, which one subscriber
    usually holds whole."""
    host = request.client.host if request.client else ""
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def make_rate_limiter(engine: AsyncEngine, settings: Settings) -> RateLimiter:
    """The limiter for an application on `engine`: its counters in PostgreSQL, or in memory
    on SQLite."""
    counters: Counters = (
        DatabaseCounters(engine) if engine.dialect.name == "postgresql" else MemoryCounters()
    )
    return RateLimiter(counters, Limits.from_settings(settings))
