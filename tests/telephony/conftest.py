"""The API configured for carrier callbacks, the local fake carriers, and callbacks signed
with the carriers' own published algorithms as their official SDKs implement them."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from outdial.app import create_app
from outdial.config import Settings
from outdial.dialer.worker import Dialer
from tests.dialer.conftest import dialer_running
from tests.telephony.fakes import FakePlivo, FakeTwilio, serving

PUBLIC_URL = "https://outdial.example.com"
PLIVO_AUTH_ID = "MAODUZYTQ0Y2FMYJBLOW"
PLIVO_TOKEN = "plivo-auth-token-for-tests"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-for-tests"
LIVEKIT_KEY = "APIoutdialTests"
LIVEKIT_SECRET = "livekit-api-secret-for-tests-" + "x" * 16
LIVEKIT_TRUNK = "ST_outdialTrunk1"


def carrier_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_url": PUBLIC_URL,
        "plivo_auth_id": PLIVO_AUTH_ID,
        "plivo_auth_token": SecretStr(PLIVO_TOKEN),
        "twilio_account_sid": TWILIO_SID,
        "twilio_auth_token": SecretStr(TWILIO_TOKEN),
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The API with both carriers' credentials and its public URL configured."""
    application = create_app(carrier_settings(database_url))
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def fake_plivo() -> AsyncIterator[FakePlivo]:
    fake = FakePlivo(PLIVO_AUTH_ID, PLIVO_TOKEN)
    async with serving(fake.app) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(TWILIO_SID, TWILIO_TOKEN)
    async with serving(fake.app) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


# --- signed callbacks --------------------------------------------------------------------------


def plivo_signature(url: str, params: dict[str, str], nonce: str, token: str = PLIVO_TOKEN) -> str:
    """Plivo's V3 signature as the official `plivo` package computes it."""
    signed = construct_post_url(url, dict(params))
    return get_signature_v3(token.encode(), signed, nonce.encode()).decode()


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """X-Twilio-Signature as the official `twilio` package computes it."""
    return RequestValidator(token).compute_signature(url, params)


def _local(url: str) -> str:
    """The path and query of a public callback URL, to post through the ASGI app."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def post_plivo(
    client: httpx.AsyncClient,
    url: str,
    params: dict[str, str],
    *,
    token: str = PLIVO_TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a Plivo callback for `url` (as Plivo calls it), signed with `token`, unless
    `headers` replace the signature headers."""
    nonce = uuid.uuid4().hex
    signed = {
        "X-Plivo-Signature-V3": plivo_signature(url, params, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    return await client.post(
        _local(url), data=params, headers=signed if headers is None else headers
    )


async def post_twilio(
    client: httpx.AsyncClient,
    url: str,
    params: dict[str, str],
    *,
    token: str = TWILIO_TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a Twilio callback for `url`, signed with `token`, unless `headers` replace it."""
    signed = {"X-Twilio-Signature": twilio_signature(url, params, token)}
    return await client.post(
        _local(url), data=params, headers=signed if headers is None else headers
    )


# --- a dialer dialing through a fake carrier ----------------------------------------------------


@asynccontextmanager
async def dialer_through(
    app: FastAPI, database_url: str, provider: str, api_url: str
) -> AsyncIterator[Dialer]:
    """Run an in-process dialer whose provider is `provider`, pointed at a fake carrier."""
    settings = carrier_settings(
        database_url,
        telephony_provider=provider,
        plivo_api_url=api_url,
        twilio_api_url=api_url,
        dialer_poll_seconds=0.02,
        dialer_lease_seconds=1.5,
    )
    async with dialer_running(app, settings) as dialer:
        yield dialer


def livekit_settings(database_url: str, livekit_url: str, **overrides: Any) -> Settings:
    """The livekit provider against a (fake) LiveKit at `livekit_url`."""
    return Settings(
        database_url=database_url,
        telephony_provider="livekit",
        livekit_url=livekit_url,
        livekit_api_key=LIVEKIT_KEY,
        livekit_api_secret=LIVEKIT_SECRET,
        livekit_sip_trunk_id=LIVEKIT_TRUNK,
        **overrides,
    )
