"""The carriers' callbacks. No API key: each is authenticated by the carrier's signature over
the URL it called and the parameters it posted (403 when missing or wrong, nothing written).
The attempt is named in the URL's query string, which the signature covers. LiveKit's webhooks
are signed over their body, which names the room and the participant."""

from fastapi import APIRouter, Request, Response

from outdial.dialer import callbacks, rooms
from outdial.dialer.streams import stream_target_of_attempt
from outdial.error_handlers import error_responses
from outdial.keys.auth import Session
from outdial.telephony import plivo, twilio

router = APIRouter(prefix="/telephony", tags=["telephony"], responses=error_responses(400, 403))

XML = "application/xml"
ANSWER_DOC = {200: {"content": {XML: {}}, "description": "The document the answered call runs."}}


@router.post("/plivo/answer", response_class=Response, responses=ANSWER_DOC)
async def plivo_answer(request: Request, session: Session) -> Response:
    """Plivo's answer URL: the call was answered; answers the Plivo XML it runs."""
    callback = await callbacks.verified_callback(request, carrier="plivo")
    await callbacks.record_events(
        session, events=[plivo.answered_event(callback.attempt_id, callback.params)]
    )
    behavior = callback.query.get("voicemail", "hangup")
    stream = await stream_target_of_attempt(session, attempt_id=callback.attempt_id)
    document = plivo.answer_xml(callback.params, voicemail_behavior=behavior, stream=stream)
    return Response(document, media_type=XML)


@router.post("/plivo/ring", status_code=204)
async def plivo_ring(request: Request, session: Session) -> None:
    """Plivo's ring URL: the call is ringing; keeps Plivo's id for it."""
    callback = await callbacks.verified_callback(request, carrier="plivo")
    if call_id := callback.params.get("CallUUID"):
        await callbacks.remember_call_id(session, attempt_id=callback.attempt_id, call_id=call_id)


@router.post("/plivo/hangup", status_code=204)
async def plivo_hangup(request: Request, session: Session) -> None:
    """Plivo's hangup URL: the call ended; settles its participant."""
    callback = await callbacks.verified_callback(request, carrier="plivo")
    await callbacks.record_events(
        session, events=[plivo.ended_event(callback.attempt_id, callback.params)]
    )


@router.post("/twilio/answer", response_class=Response, responses=ANSWER_DOC)
async def twilio_answer(request: Request, session: Session) -> Response:
    """Twilio's Url: answers the TwiML the answered call runs."""
    callback = await callbacks.verified_callback(request, carrier="twilio")
    behavior = callback.query.get("voicemail", "hangup")
    stream = await stream_target_of_attempt(session, attempt_id=callback.attempt_id)
    twiml = twilio.answer_twiml(callback.params, voicemail_behavior=behavior, stream=stream)
    return Response(twiml, media_type=XML)


@router.post("/twilio/status", status_code=204)
async def twilio_status(request: Request, session: Session) -> None:
    """Twilio's StatusCallback: answered and final statuses update the participant."""
    callback = await callbacks.verified_callback(request, carrier="twilio")
    event = twilio.status_event(callback.attempt_id, callback.params)
    if event is not None:
        await callbacks.record_events(session, events=[event])


@router.post("/livekit/webhook", status_code=204)
async def livekit_webhook(request: Request, session: Session) -> None:
    """LiveKit's webhook: a call's room's participants joining and leaving, or the room
    closing; settles PSTN legs and moves WebRTC participants."""
    events = await callbacks.verified_room_events(request)
    await rooms.record_room_events(session, events=events)
