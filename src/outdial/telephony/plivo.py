"""Plivo: calls placed with Plivo's Voice API, followed through its signed callbacks.

`place` is Plivo's "Make a call" (POST /v1/Account/{auth_id}/Call/, JSON, HTTP basic auth
with the auth id and token), answering 201 with a `request_uuid`. Its answer, ring and hangup
URLs point at this API (`/v1/telephony/plivo/…`) with the attempt id in the query string, so
each callback names its attempt, and the query is covered by the signature. Plivo calls the
connected call by another id (its CallUUID); the ring and answer callbacks store it for later
hang-ups and lookups. Machine detection is always on (synchronous): the answer callback says
`Machine=true` when a machine picked up; the agent's `voicemail_behavior` decides whether the
call is then hung up (`hangup`) or held (`leave_message`). Either way it ends as `voicemail`.

An answered call whose agent has a `stream_url` runs a bidirectional `<Stream>` (μ-law at
8 kHz, keepCallAlive: the call lasts as long as the stream): Plivo connects the agent and
speaks its own stream protocol. Plivo's `extraHeaders` takes only letters and digits (512
bytes at most), which cannot carry a phone number or the variables' JSON, so the call's
custom parameters travel as query parameters of the stream URL. A machine is connected only
when the agent leaves messages.

Callbacks are signed with Plivo's V3 signature (X-Plivo-Signature-V3 and its nonce): base64
HMAC-SHA256, keyed with the auth token, of the URL Plivo called (query sorted) followed by the
sorted POST parameters, then "." and the nonce."""

import base64
import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

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
    first,
    now,
    seconds,
)

CALLBACK_PATH = "/v1/telephony/plivo"
ANSWER_METHOD = "POST"

_ENDED_BY_STATUS: dict[str, EndReason] = {
    "busy": "busy",
    "no-answer": "no_answer",
    "timeout": "no_answer",
    # Canceled by us (a hang-up before anyone answered), as the simulated carrier reports it.
    "cancel": "no_answer",
    "canceled": "no_answer",
}
_ENDED_BY_CAUSE: dict[str, EndReason] = {
    # Q.850 names (HangupCause) and Plivo's own hangup cause names (HangupCauseName)
    "user_busy": "busy",
    "busy line": "busy",
    "no_answer": "no_answer",
    "no_user_response": "no_answer",
    "no answer": "no_answer",
    "ring timeout reached": "no_answer",
    "call_rejected": "rejected",
    "rejected": "rejected",
    "call rejected": "rejected",
    "unallocated_number": "invalid_number",
    "invalid_number_format": "invalid_number",
    "no_route_destination": "invalid_number",
    "invalid destination address": "invalid_number",
}


def _number(e164: str) -> str:
    """Plivo writes numbers as E.164 digits without the '+'."""
    return e164.removeprefix("+")


# --- the V3 signature ----------------------------------------------------------------------


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        grouped[key].append(value)
    return grouped


def _signed_text(url: str, params: Iterable[tuple[str, str]]) -> str:
    """What Plivo signs for a POST callback: the URL without its query, then "?" and the
    query sorted by key and value (the "?" also when only POST parameters follow), "." when
    both are present, then every POST parameter as key+value, sorted."""
    parts = urlsplit(url)
    query = _grouped(parse_qsl(parts.query, keep_blank_values=True))
    posted = _grouped(params)
    text = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    sorted_query = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    if sorted_query or posted:
        text += "?" + sorted_query
    if sorted_query and posted:
        text += "."
    return text + "".join(k + v for k in sorted(posted) for v in sorted(posted[k]))


def signature(*, url: str, params: Iterable[tuple[str, str]], nonce: str, auth_token: str) -> str:
    """The V3 signature of a POST callback to `url` carrying `params`."""
    message = f"{_signed_text(url, params)}.{nonce}".encode()
    digest = hmac.new(auth_token.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_valid(
    *, url: str, params: Iterable[tuple[str, str]], nonce: str, signatures: str, auth_token: str
) -> bool:
    """Whether X-Plivo-Signature-V3 (`signatures`, comma-separated when Plivo signed with
    more than one token) holds the signature of this callback."""
    if not nonce or not signatures:
        return False
    expected = signature(url=url, params=params, nonce=nonce, auth_token=auth_token)
    return any(
        hmac.compare_digest(expected.encode(), given.strip().encode())
        for given in signatures.split(",")
    )


# --- callbacks to events ---------------------------------------------------------------------


def answered_event(attempt_id: str, params: Mapping[str, str]) -> CallEvent:
    """The answer callback: answered, by a machine when Plivo's detection says so."""
    return CallEvent(
        attempt_id,
        "answered",
        now(),
        machine=params.get("Machine", "").lower() == "true",
        provider_call_id=params.get("CallUUID") or None,
    )


def end_reason(params: Mapping[str, str]) -> EndReason:
    """Why the call ended, from the hangup callback's CallStatus and hangup cause."""
    status = params.get("CallStatus", "").lower()
    if status == "completed":
        return "voicemail" if params.get("Machine", "").lower() == "true" else "answered"
    cause = first(params, "HangupCauseName", "HangupCause").lower()
    return _ENDED_BY_CAUSE.get(cause) or _ENDED_BY_STATUS.get(status) or "carrier_error"


def ended_event(attempt_id: str, params: Mapping[str, str]) -> CallEvent:
    """The hangup callback: how it ended and, if answered, for how long (Duration)."""
    reason = end_reason(params)
    talk = seconds(params.get("Duration")) if reason in ("answered", "voicemail") else 0
    return CallEvent(attempt_id, "ended", now(), reason, talk)


def answered_by(params: Mapping[str, str]) -> AnsweredBy:
    """Plivo's machine detection (`Machine`) as the stream's `answered_by`."""
    machine = params.get("Machine", "").lower()
    return {"true": "machine", "false": "human"}.get(machine, "unknown")  # type: ignore[return-value]


def answer_xml(
    params: Mapping[str, str], *, voicemail_behavior: str, stream: StreamTarget | None = None
) -> str:
    """The Plivo XML the answer URL returns: hang up on a machine when the agent says so;
    connect the agent's stream when it has one; otherwise hold the line (silent)."""
    by = answered_by(params)
    if by == "machine" and voicemail_behavior == "hangup":
        body = "<Hangup/>"
    elif stream is not None:
        body = _stream(stream, by)
    else:
        body = f"<Wait length={quoteattr(str(ANSWER_HOLD_SECONDS))}/>"
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>'


def _stream(stream: StreamTarget, by: AnsweredBy) -> str:
    parts = urlsplit(stream.url)
    query = urlencode(
        [*parse_qsl(parts.query, keep_blank_values=True), *stream.custom_parameters(by).items()]
    )
    url = urlunsplit(parts._replace(query=query))
    return (
        '<Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound" '
        f'contentType="audio/x-mulaw;rate=8000">{escape(url)}</Stream>'
    )


# --- the provider ------------------------------------------------------------------------------


class PlivoProvider(RestCarrier):
    name = "plivo"

    def __init__(
        self,
        events: EventSink,
        *,
        auth_id: str,
        auth_token: str,
        api_url: str,
        public_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            events,
            base_url=f"{api_url.rstrip('/')}/v1/Account/{auth_id}/",
            auth=(auth_id, auth_token),
            public_url=public_url,
            transport=transport,
        )

    def _url(self, event: str, request: DialRequest) -> str:
        query = {"attempt": request.attempt_id}
        if event == "answer":
            query["voicemail"] = request.voicemail_behavior
        return callback_url(self.public_url, f"{CALLBACK_PATH}/{event}", **query)

    async def _create_call(self, request: DialRequest) -> str:
        response = await self.http.post(
            "Call/",
            json={
                "from": _number(request.from_number),
                "to": _number(request.to),
                "answer_url": self._url("answer", request),
                "answer_method": ANSWER_METHOD,
                "ring_url": self._url("ring", request),
                "ring_method": "POST",
                "hangup_url": self._url("hangup", request),
                "hangup_method": "POST",
                "ring_timeout": request.ring_timeout_seconds,
                "machine_detection": "true",
            },
        )
        self._check(response)
        return str(response.json()["request_uuid"])

    async def _end_call(self, call_id: str) -> None:
        """Plivo's "Hang up a call" (DELETE Call/{uuid}/); a call not yet connected is known
        only by its request uuid, which "Cancel a queued call" (DELETE Request/{uuid}/) ends."""
        response = await self.http.delete(f"Call/{call_id}/")
        if response.status_code == 404:
            response = await self.http.delete(f"Request/{call_id}/")
        if response.status_code != 404:
            response.raise_for_status()

    async def _call_state(self, attempt_id: str, call_id: str) -> AttemptState:
        """Live (or still queued) calls are live; a call detail record means it ended."""
        for status in ("live", "queued"):
            response = await self.http.get(f"Call/{call_id}/", params={"status": status})
            if response.status_code != 404:
                response.raise_for_status()
                return AttemptState("live")
        response = await self.http.get(f"Call/{call_id}/")
        if response.status_code == 404:
            return AttemptState("unknown")
        response.raise_for_status()
        return AttemptState("ended", end=_ended_from_record(attempt_id, response.json()))


def _ended_from_record(attempt_id: str, record: Mapping[str, object]) -> CallEvent:
    """A Plivo call detail record as an `ended` event: answered when it has an answer time."""
    if record.get("answer_time"):
        return CallEvent(
            attempt_id, "ended", now(), "answered", seconds(record.get("call_duration"))
        )
    cause = str(record.get("hangup_cause_name") or "").lower()
    return CallEvent(attempt_id, "ended", now(), _ENDED_BY_CAUSE.get(cause, "carrier_error"))
