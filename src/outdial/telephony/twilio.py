"""Twilio: calls placed with Twilio's Calls API, followed through its signed status callbacks.

`place` is POST /2010-04-01/Accounts/{sid}/Calls.json (form-encoded, HTTP basic auth with the
account SID and auth token), answering 201 with the call's `sid` (CallSid), which names the
call from then on. `Url` (the TwiML the answered call runs) and `StatusCallback` (for the
initiated, ringing, answered and completed events) point at this API
(`/v1/telephony/twilio/…`) with the attempt id in the query string. Answering-machine
detection is always on: `Enable` when the agent hangs up on machines, `DetectMessageEnd` (wait
for the beep) when it leaves a message; Twilio reports the verdict as `AnsweredBy`.

An answered call whose agent has a `stream_url` runs `<Connect><Stream url=…>`: Twilio opens a
bidirectional Media Stream to the agent, with the call's custom parameters as `<Parameter>`s
(they reach the agent in `start.customParameters`). Twilio takes no query string on a stream
URL, so the stream URL's own query parameters are sent as `<Parameter>`s too. A machine is
connected only when the agent leaves messages; otherwise it is hung up on.

Callbacks carry X-Twilio-Signature: base64 HMAC-SHA1, keyed with the auth token, of the full
URL Twilio requested followed by every POST parameter as name+value, sorted by name."""

import base64
import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

import httpx

from outdial.telephony.base import (
    AnsweredBy,
    AttemptState,
    CallEvent,
    DialRequest,
    EndReason,
    EventSink,
    StreamTarget,
)
from outdial.telephony.carrier import (
    ANSWER_HOLD_SECONDS,
    RestCarrier,
    callback_url,
    now,
    seconds,
)

CALLBACK_PATH = "/v1/telephony/twilio"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
_ENDED_BY_STATUS: dict[str, EndReason] = {
    "busy": "busy",
    "no-answer": "no_answer",
    # Canceled by us (a hang-up before anyone answered), as the simulated carrier reports it.
    "canceled": "no_answer",
    "failed": "carrier_error",
}
_FAILED_BY_SIP_CODE: dict[str, EndReason] = {
    "404": "invalid_number",
    "484": "invalid_number",
    "486": "busy",
    "600": "busy",
    "603": "rejected",
    "408": "no_answer",
    "480": "no_answer",
}


# --- the signature -----------------------------------------------------------------------------


def signature(*, url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """X-Twilio-Signature of a POST to `url` carrying `params`."""
    grouped: dict[str, set[str]] = defaultdict(set)
    for name, value in params:
        grouped[name].add(value)
    text = url + "".join(name + v for name in sorted(grouped) for v in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> set[str]:
    """The URL with and without its default port: Twilio signs either form."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    return {
        urlunsplit(parts._replace(netloc=f"{prefix}{host}")),
        urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")),
    }


def signature_valid(
    *, url: str, params: Iterable[tuple[str, str]], given: str, auth_token: str
) -> bool:
    """Whether X-Twilio-Signature (`given`) signs this callback."""
    if not given:
        return False
    params = list(params)
    return any(
        hmac.compare_digest(
            signature(url=variant, params=params, auth_token=auth_token).encode(), given.encode()
        )
        for variant in _port_variants(url)
    )


# --- callbacks to events ---------------------------------------------------------------------


def _by_machine(answered_by: str) -> bool:
    return answered_by.startswith("machine") or answered_by == "fax"


def end_reason(status: str, *, answered_by: str = "", sip_code: str = "") -> EndReason:
    """Why a call in a final CallStatus ended."""
    if status == "completed":
        return "voicemail" if _by_machine(answered_by) else "answered"
    if status == "failed" and sip_code in _FAILED_BY_SIP_CODE:
        return _FAILED_BY_SIP_CODE[sip_code]
    return _ENDED_BY_STATUS.get(status, "carrier_error")


def status_event(attempt_id: str, params: Mapping[str, str]) -> CallEvent | None:
    """A status callback as an event: in-progress → answered; a final status → ended (with
    CallDuration as talk time when answered); initiated, ringing, queued → nothing."""
    status = params.get("CallStatus", "").lower()
    answered_by = params.get("AnsweredBy", "").lower()
    if status == "in-progress":
        return CallEvent(attempt_id, "answered", now(), machine=_by_machine(answered_by))
    if status in LIVE_STATUSES or not status:
        return None
    reason = end_reason(status, answered_by=answered_by, sip_code=params.get("SipResponseCode", ""))
    talk = seconds(params.get("CallDuration")) if reason in ("answered", "voicemail") else 0
    return CallEvent(attempt_id, "ended", now(), reason, talk)


def answered_by(params: Mapping[str, str]) -> AnsweredBy:
    """Twilio's AnsweredBy as the stream's `answered_by` (human, machine or unknown)."""
    verdict = params.get("AnsweredBy", "").lower()
    if _by_machine(verdict):
        return "machine"
    return "human" if verdict == "human" else "unknown"


def answer_twiml(
    params: Mapping[str, str], *, voicemail_behavior: str, stream: StreamTarget | None = None
) -> str:
    """The TwiML the answered call runs: hang up on a machine when the agent says so;
    connect the agent's stream when it has one; otherwise hold the line (silent)."""
    by = answered_by(params)
    if by == "machine" and voicemail_behavior == "hangup":
        body = "<Hangup/>"
    elif stream is not None:
        body = _connect_stream(stream, by)
    else:
        body = f"<Pause length={quoteattr(str(ANSWER_HOLD_SECONDS))}/>"
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>'


def _connect_stream(stream: StreamTarget, by: AnsweredBy) -> str:
    parts = urlsplit(stream.url)
    url = urlunsplit(parts._replace(query=""))
    parameters = dict(parse_qsl(parts.query, keep_blank_values=True))
    parameters.update(stream.custom_parameters(by))
    children = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in parameters.items()
    )
    return f"<Connect><Stream url={quoteattr(url)}>{children}</Stream></Connect>"


# --- the provider ------------------------------------------------------------------------------


class TwilioProvider(RestCarrier):
    name = "twilio"

    def __init__(
        self,
        events: EventSink,
        *,
        account_sid: str,
        auth_token: str,
        api_url: str,
        public_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            events,
            base_url=f"{api_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/",
            auth=(account_sid, auth_token),
            public_url=public_url,
            transport=transport,
        )

    async def _create_call(self, request: DialRequest) -> str:
        answer = callback_url(
            self.public_url,
            f"{CALLBACK_PATH}/answer",
            attempt=request.attempt_id,
            voicemail=request.voicemail_behavior,
        )
        status = callback_url(
            self.public_url, f"{CALLBACK_PATH}/status", attempt=request.attempt_id
        )
        detection = (
            "DetectMessageEnd" if request.voicemail_behavior == "leave_message" else "Enable"
        )
        form = {
            "To": request.to,
            "From": request.from_number,
            "Url": answer,
            "Method": "POST",
            "StatusCallback": status,
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": list(STATUS_EVENTS),  # one field per event
            "Timeout": str(request.ring_timeout_seconds),
            "MachineDetection": detection,
        }
        response = await self.http.post("Calls.json", data=form)
        self._check(response)
        return str(response.json()["sid"])

    async def _end_call(self, call_id: str) -> None:
        """Update the call with Status=completed, which ends it whatever its state."""
        response = await self.http.post(f"Calls/{call_id}.json", data={"Status": "completed"})
        if response.status_code != 404:
            response.raise_for_status()

    async def _call_state(self, attempt_id: str, call_id: str) -> AttemptState:
        response = await self.http.get(f"Calls/{call_id}.json")
        if response.status_code == 404:
            return AttemptState("unknown")
        response.raise_for_status()
        call = response.json()
        status = str(call.get("status", ""))
        if status in LIVE_STATUSES:
            return AttemptState("live")
        reason = end_reason(status, answered_by=str(call.get("answered_by") or ""))
        talk = seconds(call.get("duration")) if reason in ("answered", "voicemail") else 0
        return AttemptState("ended", end=CallEvent(attempt_id, "ended", now(), reason, talk))
