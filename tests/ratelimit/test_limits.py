"""Rate limits over the API, on both backends (issue 10, defect 7): per key, per address, the
lockout after unknown keys, 429 `rate_limited` with Retry-After, and the routes left alone."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from outdial.app import create_app
from outdial.config import Settings
from tests.conftest import client_from, error_code


@asynccontextmanager
async def limited(database_url: str, **limits: int) -> AsyncIterator[FastAPI]:
    """The API over the test database, with these rate limits (the rest generous)."""
    settings = {
        "rate_limit_per_secret_key": 1000,
        "rate_limit_per_publishable_key": 1000,
        "rate_limit_per_ip": 1000,
        "auth_failures_per_ip": 1000,
        **limits,
    }
    application = create_app(Settings(database_url=database_url, **settings))
    async with LifespanManager(application):
        yield application


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_rate_limited(response: httpx.Response, scope: str) -> int:
    assert response.status_code == 429, response.text
    assert error_code(response) == "rate_limited"
    details = response.json()["error"]["details"]
    assert details["scope"] == scope
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    assert details["retry_after_seconds"] == retry_after
    return retry_after


async def test_one_key_is_limited_then_let_through_after_retry_after(
    database_url, make_tenant
) -> None:
    """The reproduction: requests with one key all succeeded, however many a second."""
    tenant = await make_tenant()
    async with limited(database_url, rate_limit_per_secret_key=5) as app:
        async with client_from(app) as client:
            answers = [
                await client.get("/v1/auth/me", headers=bearer(tenant.key)) for _ in range(30)
            ]
            statuses = [r.status_code for r in answers]
            # A sliding window: 5 a second, a 6th if the burst straddles a window boundary.
            assert 5 <= statuses.count(200) <= 6, statuses
            assert set(statuses) == {200, 429}
            assert statuses.index(429) >= 5
            retry_after = assert_rate_limited(answers[-1], "key")
            assert retry_after <= 2

            await asyncio.sleep(retry_after)
            again = await client.get("/v1/auth/me", headers=bearer(tenant.key))
            assert again.status_code == 200, again.text
        # Another key of the same address and tenant has a bucket of its own.
        other = (await make_tenant()).key
        async with client_from(app) as client:
            response = await client.get("/v1/auth/me", headers=bearer(other))
            assert response.status_code == 200


async def test_publishable_keys_have_their_own_lower_limit(database_url, make_tenant) -> None:
    tenant = await make_tenant()
    async with limited(database_url, rate_limit_per_publishable_key=2) as app:
        async with client_from(app) as client:
            agent = await client.post("/v1/agents", json={"name": "A"}, headers=bearer(tenant.key))
            created = await client.post(
                "/v1/keys",
                json={"type": "publishable", "agent_id": agent.json()["id"]},
                headers=bearer(tenant.key),
            )
            key = created.json()["key"]
            body = {"participants": [{"transport": "webrtc", "identity": "v"}]}
            answers = [
                await client.post("/v1/calls", json=body, headers=bearer(key)) for _ in range(8)
            ]
            assert [r.status_code for r in answers].count(201) in (2, 3)
            assert_rate_limited(answers[-1], "key")
            # The secret key is not held back by its publishable key's bucket.
            me = await client.get("/v1/auth/me", headers=bearer(tenant.key))
            assert me.status_code == 200


async def test_an_address_is_limited_across_keys(database_url, make_tenant) -> None:
    keys = [(await make_tenant()).key for _ in range(4)]
    async with limited(database_url, rate_limit_per_ip=6) as app:
        async with client_from(app) as crowded, client_from(app) as elsewhere:
            answers = [
                await crowded.get("/v1/auth/me", headers=bearer(key))
                for key in keys * 4  # 4 requests a key: no key reaches a key limit
            ]
            assert 6 <= [r.status_code for r in answers].count(200) <= 7
            assert_rate_limited(answers[-1], "ip")
            response = await elsewhere.get("/v1/auth/me", headers=bearer(keys[0]))
            assert response.status_code == 200


async def test_unknown_keys_lock_their_address_out(database_url, make_tenant) -> None:
    """The reproduction: 2,000 guessed keys all answered 401, without end."""
    tenant = await make_tenant()
    async with limited(database_url, auth_failures_per_ip=5) as app:
        async with client_from(app) as guesser, client_from(app) as bystander:
            for n in range(5):
                guess = await guesser.get("/v1/auth/me", headers=bearer(f"sb_secret_guess{n}"))
                assert guess.status_code == 401
                assert error_code(guess) == "invalid_api_key"
            # Locked out: the next guess, and even a real key, from that address.
            for headers in (bearer("sb_secret_guess6"), bearer(tenant.key), {}):
                retry_after = assert_rate_limited(
                    await guesser.get("/v1/auth/me", headers=headers), "auth_failures"
                )
                assert 1 <= retry_after <= 120
            # Everyone else carries on; requests without a key are not guesses.
            for _ in range(10):
                missing = await bystander.get("/v1/auth/me")
                assert error_code(missing) == "missing_api_key"
            assert (
                await bystander.get("/v1/auth/me", headers=bearer(tenant.key))
            ).status_code == 200


async def test_health_and_carrier_callbacks_are_not_limited(database_url, make_tenant) -> None:
    """A locked-out address still gets /healthz (load balancers, liveness probes) and reaches
    the carrier callbacks, which check the carrier's signature instead: throttling them would
    lose calls' outcomes in a busy campaign's bursts."""
    async with limited(database_url, auth_failures_per_ip=1, rate_limit_per_ip=2) as app:
        async with client_from(app) as client:
            await client.get("/v1/auth/me", headers=bearer("sb_secret_guess"))
            assert_rate_limited(await client.get("/v1/auth/me"), "auth_failures")
            for _ in range(5):
                assert (await client.get("/healthz")).status_code == 200
                callback = await client.post("/v1/telephony/twilio/status", data={"CallSid": "x"})
                assert callback.status_code != 429
                assert error_code(callback) != "rate_limited"


async def test_the_schema_documents_429_where_it_can_happen(app) -> None:
    paths = app.openapi()["paths"]
    assert "429" in paths["/v1/calls/batch"]["post"]["responses"]
    assert "Retry-After" in paths["/v1/calls/batch"]["post"]["responses"]["429"]["headers"]
    assert "429" in paths["/v1/dialing-permissions"]["put"]["responses"]
    assert "429" not in paths["/v1/telephony/twilio/status"]["post"]["responses"]


@pytest.mark.parametrize("setting", ["rate_limit_per_secret_key", "auth_failures_per_ip"])
async def test_zero_turns_a_limit_off(database_url, make_tenant, setting) -> None:
    tenant = await make_tenant()
    async with limited(database_url, **{setting: 0, "rate_limit_per_ip": 0}) as app:
        async with client_from(app) as client:
            key = tenant.key if setting == "rate_limit_per_secret_key" else "sb_secret_guess"
            statuses = {
                (await client.get("/v1/auth/me", headers=bearer(key))).status_code
                for _ in range(40)
            }
            assert statuses == ({200} if key == tenant.key else {401})
