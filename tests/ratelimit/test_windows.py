"""The sliding-window counter's arithmetic, and the in-memory counters SQLite uses (the
PostgreSQL ones are exercised through the API in test_limits.py and test_processes.py)."""

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from outdial.config import Settings
from outdial.ratelimit.limiter import (
    Bucket,
    Count,
    Limits,
    MemoryCounters,
    RateLimited,
    RateLimiter,
    client_address,
    estimate,
    seconds_until_allowed,
)

T0 = 1_700_000_000.0  # a window boundary for 1 s and 60 s windows


def test_estimate_weights_the_previous_window_by_its_overlap() -> None:
    count = Count(window_index=int(T0), hits=4, previous_hits=10)
    assert estimate(count, now=T0, window=1) == 14
    assert estimate(count, now=T0 + 0.25, window=1) == pytest.approx(4 + 7.5)
    # Not touched for a window: its hits became the previous window's; for two, nothing.
    assert estimate(count, now=T0 + 1.5, window=1) == pytest.approx(2)
    assert estimate(count, now=T0 + 2.5, window=1) == 0


def test_seconds_until_one_more_fits() -> None:
    # 5 a second: 2 now, 8 in the previous second. At +0.1 s: 8 * 0.9 + 2 = 9.2; room for a
    # 6th needs 8 * (1 - g) + 2 <= 4, g >= 0.75.
    count = Count(int(T0), hits=2, previous_hits=8)
    assert seconds_until_allowed(count, now=T0 + 0.1, window=1, limit=5) == pytest.approx(0.65)
    # Over the limit in this window alone: wait for the next, and for enough of it to pass.
    count = Count(int(T0), hits=10, previous_hits=0)
    assert seconds_until_allowed(count, now=T0 + 0.5, window=1, limit=5) == pytest.approx(0.5 + 0.6)
    # Room already.
    assert seconds_until_allowed(Count(int(T0), 1, 0), now=T0, window=1, limit=5) == 0


async def limiter(**limits: int) -> RateLimiter:
    defaults = {"secret_key": 3, "publishable_key": 2, "ip": 100, "auth_failures": 2}
    return RateLimiter(MemoryCounters(), Limits(**{**defaults, **limits}))


async def refused(limiter: RateLimiter, **request) -> RateLimited:
    with pytest.raises(RateLimited) as raised:
        await limiter.check(**request)
    return raised.value


async def test_a_key_gets_its_limit_a_window_and_refusals_count_too() -> None:
    limits = await limiter()
    key = "sb_secret_" + "k" * 43
    for _ in range(3):
        await limits.check(address="10.0.0.1", token=key, now=T0 + 0.1)
    error = await refused(limits, address="10.0.0.1", token=key, now=T0 + 0.2)
    assert (error.status_code, error.code) == (429, "rate_limited")
    assert error.details == {
        "scope": "key",
        "limit": 3,
        "window_seconds": 1,
        "retry_after_seconds": error.retry_after,
    }
    # Another key, another bucket; a publishable key has its own limit.
    await limits.check(address="10.0.0.1", token="sb_secret_" + "x" * 43, now=T0 + 0.2)
    public = "sb_publishable_" + "p" * 43
    for _ in range(2):
        await limits.check(address="10.0.0.2", token=public, now=T0 + 0.2)
    assert (await refused(limits, address="10.0.0.2", token=public, now=T0 + 0.3)).details[
        "scope"
    ] == "key"
    # The refused request counted: at +1.1 s the previous second's 4 hits still weigh 3.6.
    await refused(limits, address="10.0.0.1", token=key, now=T0 + 1.1)
    await limits.check(address="10.0.0.1", token=key, now=T0 + 2.5)


async def test_unknown_keys_lock_their_address_out_whatever_it_sends_next() -> None:
    limits = await limiter()
    for _ in range(2):
        await limits.check(address="10.0.0.3", token="sb_secret_guess", now=T0)
        await limits.failed(address="10.0.0.3", now=T0)
    error = await refused(limits, address="10.0.0.3", token="sb_secret_" + "k" * 43, now=T0 + 1)
    assert error.details["scope"] == "auth_failures"
    assert 60 <= error.retry_after <= 120
    await refused(limits, address="10.0.0.3", token=None, now=T0 + 30)
    await limits.check(address="10.0.0.4", token=None, now=T0 + 30)  # other addresses: fine
    await limits.check(address="10.0.0.3", token=None, now=T0 + 125)  # aged out


async def test_a_zero_limit_is_off() -> None:
    limits = await limiter(secret_key=0, ip=0, auth_failures=0)
    for _ in range(50):
        await limits.check(address="10.0.0.5", token="sb_secret_" + "k" * 43, now=T0)
        await limits.failed(address="10.0.0.5", now=T0)


async def test_memory_counters_roll_their_windows() -> None:
    counters = MemoryCounters()
    bucket = Bucket("b", "key", 10, 1)
    for _ in range(3):
        counts = await counters.hit([bucket], [], now=T0 + 0.5)
    assert counts["b"] == Count(int(T0), 3, 0)
    assert (await counters.hit([bucket], [], now=T0 + 1.2))["b"] == Count(int(T0) + 1, 1, 3)
    assert (await counters.hit([bucket], [], now=T0 + 5))["b"] == Count(int(T0) + 5, 1, 0)
    assert await counters.hit([], [Bucket("never", "ip", 1, 1)], now=T0) == {}


@pytest.mark.parametrize(
    "setting",
    [
        {"rate_limit_per_secret_key": -1},
        {"rate_limit_per_ip": 1.5},
        {"rate_limit_window_seconds": 0},
        {"auth_failures_per_ip": "many"},
    ],
)
def test_bad_limits_are_refused_at_startup(setting) -> None:
    with pytest.raises(ValidationError):
        Settings(**setting)


def test_the_defaults_are_the_documented_ones() -> None:
    limits = Limits.from_settings(Settings())
    assert limits == Limits(secret_key=100, publishable_key=10, ip=200, auth_failures=20, window=1)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one subscriber's /64, one bucket
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 seen through an IPv6 socket
        ("testclient", "testclient"),
    ],
)
def test_client_addresses(host, address) -> None:
    request = Request({"type": "http", "client": (host, 5000), "headers": []})
    assert client_address(request) == address
    assert client_address(Request({"type": "http", "headers": []})) == "unknown"
