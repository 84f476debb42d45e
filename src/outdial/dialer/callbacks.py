"""Carrier callbacks: authenticated by the carrier's signature, applied as call events."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request
from livekit.api import TokenVerifier, WebhookReceiver
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.config import Settings
from outdial.dialer import attempts, outcomes
from outdial.dialer.settle import report_settled
from outdial.errors import Forbidden, ValidationFailed
from outdial.telephony import livekit, plivo, twilio
from outdial.telephony.base import CallEvent, RoomEvent


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback whose signature checked out: the attempt it names and what it carried."""

    attempt_id: str
    params: dict[str, str]
    query: dict[str, str]


SignatureCheck = Callable[[str, list[tuple[str, str]], Request, str], bool]


def _plivo_signed(url: str, params: list[tuple[str, str]], request: Request, token: str) -> bool:
    return plivo.signature_valid(
        url=url,
        params=params,
        nonce=request.headers.get("X-Plivo-Signature-V3-Nonce", ""),
        signatures=request.headers.get("X-Plivo-Signature-V3", ""),
        auth_token=token,
    )


def _twilio_signed(url: str, params: list[tuple[str, str]], request: Request, token: str) -> bool:
    return twilio.signature_valid(
        url=url,
        params=params,
        given=request.headers.get("X-Twilio-Signature", ""),
        auth_token=token,
    )


_CHECKS: dict[str, tuple[str, SignatureCheck]] = {
    "plivo": ("plivo_auth_token", _plivo_signed),
    "twilio": ("twilio_auth_token", _twilio_signed),
}


async def verified_callback(request: Request, *, carrier: str) -> Callback:
    """The callback, if `carrier` signed it for the URL it called (our public URL plus the
    path and query); 403 otherwise, before anything is read from it or written."""
    settings: Settings = request.app.state.settings
    token_setting, signed = _CHECKS[carrier]
    token = getattr(settings, token_setting)
    if token is None or not settings.public_url:
        raise Forbidden(
            f"{carrier.capitalize()} callbacks are not accepted: this server has no "
            f"OUTDIAL_{token_setting.upper()} or OUTDIAL_PUBLIC_URL to check them with.",
            code="callbacks_not_configured",
        )
    body = (await request.body()).decode("utf-8", errors="replace")
    params = parse_qsl(body, keep_blank_values=True)
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not signed(url, params, request, token.get_secret_value()):
        raise Forbidden(
            f"The {carrier.capitalize()} signature of this callback is missing or wrong.",
            code="invalid_signature",
        )
    query = dict(request.query_params)
    attempt_id = query.get("attempt")
    if not attempt_id:
        raise ValidationFailed("The callback URL names no attempt (?attempt=…).")
    return Callback(attempt_id, dict(params), query)


async def verified_room_events(request: Request) -> list[RoomEvent]:
    """What a LiveKit webhook reports, if LiveKit signed it: its Authorization header is a
    token signed with our API key and secret carrying the body's SHA-256, as
    `livekit.api.WebhookReceiver` checks it; 403 otherwise, before anything is written. Taken
    only where LiveKit is the telephony provider."""
    settings: Settings = request.app.state.settings
    if settings.telephony_provider != "livekit":
        raise Forbidden(
            "LiveKit webhooks are not accepted: OUTDIAL_TELEPHONY_PROVIDER is not livekit.",
            code="callbacks_not_configured",
        )
    body = (await request.body()).decode("utf-8", errors="replace")
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    receiver = WebhookReceiver(TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret))
    try:
        event = receiver.receive(body, token)
    except Exception as exc:
        # The receiver raises whatever its JWT and JSON parsers raise, each a refusal.
        raise Forbidden(
            "The LiveKit signature of this webhook is missing or wrong.",
            code="invalid_signature",
        ) from exc
    return livekit.room_events(event)


async def record_events(session: AsyncSession, *, events: Sequence[CallEvent]) -> None:
    """Apply what a carrier reported; a repeated callback changes nothing."""
    report_settled(await outcomes.record_call_events(session, events=events))


async def remember_call_id(session: AsyncSession, *, attempt_id: str, call_id: str) -> None:
    """Keep the carrier's id for the connected call, for later hang-ups and lookups."""
    await attempts.remember_provider_call_id(session, attempt_id=attempt_id, call_id=call_id)
