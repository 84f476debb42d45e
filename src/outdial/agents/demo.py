"""`outdial demo-agent`: the smallest voice agent that shows a call carrying audio both ways.

It takes outdial's streams (the Twilio Media Streams protocol) on a WebSocket port: when a
call starts it plays a greeting (a rising chime), then echoes back everything it hears, and it
prints each call as it goes. Point an agent's `stream_url` at it (ws://127.0.0.1:8765) and
place a call. With `--secret` it checks each upgrade's Standard Webhooks signature (the agent's
`stream_secret`), as a real agent should; with `--record DIR` it keeps what it heard of each
call as a WAV file."""

import asyncio
import base64
import json
import logging
import signal
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from outdial.telephony.media.g711 import FRAME_BYTES, SAMPLE_RATE, ulaw_to_linear
from outdial.telephony.media.tones import greeting

log = logging.getLogger("outdial.demo_agent")

DEFAULT_PORT = 8765
_LINEAR = [ulaw_to_linear(code).to_bytes(2, "little", signed=True) for code in range(256)]


@dataclass
class DemoCall:
    """One call as the demo agent sees it."""

    stream_sid: str = ""
    call_sid: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    heard: bytearray = field(default_factory=bytearray)
    said_bytes: int = 0
    keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        who = self.parameters.get("to", "?")
        by = self.parameters.get("answered_by", "?")
        return f"call {self.call_sid} to {who} (answered by {by})"


async def _send_audio(ws: ServerConnection, call: DemoCall, ulaw: bytes) -> None:
    message = {
        "event": "media",
        "streamSid": call.stream_sid,
        "media": {"payload": base64.b64encode(ulaw).decode()},
    }
    await ws.send(json.dumps(message))
    call.said_bytes += len(ulaw)


async def _greet(ws: ServerConnection, call: DemoCall) -> None:
    chime = greeting()
    for start in range(0, len(chime), FRAME_BYTES):
        await _send_audio(ws, call, chime[start : start + FRAME_BYTES])
    await ws.send(
        json.dumps({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "greeting"}})
    )


async def _handle(ws: ServerConnection, record: Path | None) -> None:
    call = DemoCall()
    try:
        async for raw in ws:
            message = json.loads(raw)
            event = message.get("event")
            if event == "start":
                start = message["start"]
                call.stream_sid, call.call_sid = start["streamSid"], start["callSid"]
                call.parameters = start.get("customParameters", {})
                log.info("%s: connected; greeting", call.describe())
                await _greet(ws, call)
            elif event == "media":
                audio = base64.b64decode(message["media"]["payload"])
                call.heard += audio
                await _send_audio(ws, call, audio)  # the echo
            elif event == "dtmf":
                call.keys.append(message["dtmf"]["digit"])
                log.info("%s: key %s", call.describe(), message["dtmf"]["digit"])
            elif event == "mark":
                log.info("%s: greeting played", call.describe())
            elif event == "stop":
                break
    except ConnectionClosed:
        pass
    log.info(
        "%s: ended; heard %.2f s of audio, said %.2f s (greeting and echo)%s",
        call.describe(),
        len(call.heard) / SAMPLE_RATE,
        call.said_bytes / SAMPLE_RATE,
        f", keys {''.join(call.keys)}" if call.keys else "",
    )
    if record is not None and call.call_sid:
        path = record / f"{call.call_sid}-heard.wav"
        write_wav(path, bytes(call.heard))
        log.info("%s: what it heard is in %s", call.describe(), path)


def write_wav(path: Path, ulaw: bytes) -> None:
    """μ-law audio as a 16-bit PCM WAV file (which every player opens)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"".join(_LINEAR[code] for code in ulaw))


def signature_check(secret: str, scheme: str = "ws") -> Callable[..., Response | None]:
    """A `process_request` hook refusing (401) upgrades not signed with `secret`: the signed
    content is the stream URL as the agent's `stream_url` names it, rebuilt from the request."""
    webhook = Webhook(secret)

    def check(connection: ServerConnection, request: Request) -> Response | None:
        url = f"{scheme}://{request.headers.get('Host', '')}{request.path}"
        # A stream_url with no path (ws://host:port) is requested as "/".
        candidates = [url, url.removesuffix("/")] if request.path == "/" else [url]
        headers = dict(request.headers.raw_items())
        for candidate in candidates:
            try:
                webhook.verify(candidate, headers, json_parse=False)
                return None
            except WebhookVerificationError:
                continue
        log.warning("refused a stream to %s: its signature is missing or wrong", url)
        return Response(401, "Unauthorized", Headers(), b"bad signature\n")

    return check


@asynccontextmanager
async def serving(
    *, host: str, port: int, secret: str | None = None, record: Path | None = None
) -> AsyncIterator[str]:
    """Serve the demo agent; yields its URL (port 0: a free one)."""
    check = signature_check(secret) if secret else None
    async with serve(lambda ws: _handle(ws, record), host, port, process_request=check) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://{host}:{bound}"
        log.info(
            "demo agent listening on %s (use it as an agent's stream_url)%s",
            url,
            "; upgrades must be signed" if secret else "",
        )
        yield url


def command(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="OUTDIAL_DEMO_AGENT_SECRET",
            help="The agent's stream_secret: refuse upgrades not signed with it.",
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Keep what each call heard as DIR/<callSid>-heard.wav."),
    ] = None,
) -> None:
    """Run a demo voice agent: a greeting chime, then it echoes what it hears."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with serving(host=host, port=port, secret=secret, record=record):
            await stop.wait()

    asyncio.run(main())
