"""`/dashboard`: sign in with a secret key, then one live page per tenant."""

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute, Mount, Route

from outdial.campaigns import routes as campaign_routes
from outdial.dashboard import service
from outdial.dashboard.feed import Feeds, Fragments, KeyRevoked
from outdial.dashboard.service import Snapshot
from outdial.errors import OutdialError
from outdial.idempotency.dependency import Once
from outdial.keys.service import Principal, authenticate, digest
from outdial.observability import bind_log_context

HERE = Path(__file__).parent
COOKIE = "outdial_dashboard_key"
COOKIE_MAX_AGE = 12 * 3600
MAX_FORM_BYTES = 4096

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.trim_blocks = templates.env.lstrip_blocks = True


class SignedOut(Exception):
    """No valid secret key in the cookie."""


def csrf_token(key: str) -> str:
    """Derived from the key itself, so only a page that was served to its holder knows it."""
    return hmac.new(key.encode(), b"outdial-dashboard-csrf", hashlib.sha256).hexdigest()


async def _viewer(request: Request, session: AsyncSession) -> tuple[Principal, str]:
    key = request.cookies.get(COOKIE, "")
    if not key:
        raise SignedOut
    try:
        principal = await authenticate(session, token=key)
    except OutdialError:
        raise SignedOut from None
    if not principal.is_secret:
        raise SignedOut
    bind_log_context(tenant_id=principal.tenant_id)
    return principal, key


def _feeds(request: Request) -> Feeds:
    feeds: Feeds | None = getattr(request.app.state, "dashboard_feeds", None)
    if feeds is None:
        feeds = request.app.state.dashboard_feeds = Feeds(request.app.state.sessionmaker, render)
    return feeds


async def close_feeds(app: FastAPI) -> None:
    """End every open page's stream: the server is stopping (uvicorn waits for open
    responses before it stops, and a stream never ends by itself)."""
    feeds: Feeds | None = getattr(app.state, "dashboard_feeds", None)
    if feeds is not None:
        await feeds.close()


def render(snapshot: Snapshot) -> Fragments:
    """The page's live parts, rendered once per snapshot for every viewer of the tenant."""
    return {
        name: templates.get_template(f"_{name}.html").render(snapshot=snapshot)
        for name in ("queue", "campaigns", "calls")
    }


# --- signing in and out ----------------------------------------------------------------------


async def login_page(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": None})


async def login(request: Request) -> Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return HTMLResponse("Too large.", 413)
    key = parse_qs(body.decode(errors="replace")).get("key", [""])[0].strip()
    try:
        async with _session(request) as session:
            principal = await authenticate(session, token=key)
        refused = None if principal.is_secret else "Sign in with a secret key (sb_secret_…)."
    except OutdialError as exc:
        refused = exc.message
    if refused:
        return templates.TemplateResponse(request, "login.html", {"error": refused}, 401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    key = request.cookies.get(COOKIE, "")
    if not _csrf_ok(request, key):
        return HTMLResponse("Forbidden.", 403)
    # htmx follows HX-Redirect (a 303 it would follow silently, in place of the page)
    response = Response(status_code=204, headers={"HX-Redirect": "/dashboard/login"})
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


def _csrf_ok(request: Request, key: str) -> bool:
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return False
    given = request.headers.get("x-csrf-token", "")
    return bool(key) and hmac.compare_digest(given, csrf_token(key))


# --- the page ----------------------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    async with _session(request) as session:
        try:
            principal, key = await _viewer(request, session)
        except SignedOut:
            return RedirectResponse("/dashboard/login", status_code=303)
        snapshot = await service.load_snapshot(
            session, tenant_id=principal.tenant_id, final_counts={}, key_digests=()
        )
    context = {
        "fragments": render(snapshot),
        "headers": json.dumps({"X-CSRF-Token": csrf_token(key)}),
        "tenant_id": principal.tenant_id,
    }
    return templates.TemplateResponse(request, "index.html", context)


async def events(request: Request) -> Response:
    """Server-sent events: the page's fragments as they change (htmx swaps them in)."""
    async with _session(request) as session:
        try:
            principal, key = await _viewer(request, session)
        except SignedOut:
            return Response(status_code=204)  # an EventSource stops reconnecting on 204
    stream = _feeds(request).watch(principal.tenant_id, digest(key))
    return StreamingResponse(
        _sse(stream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(stream: AsyncIterator[Fragments]) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    try:
        async for fragments in stream:
            if not fragments:
                yield ": heartbeat\n\n"
            for name, html in fragments.items():
                yield f"event: {name}\n" + "".join(f"data: {line}\n" for line in html.splitlines())
                yield "\n"
    except KeyRevoked:
        yield "event: signed-out\ndata: signed out\n\n"


async def call_page(request: Request) -> Response:
    call_id = request.path_params["call_id"]
    try:
        async with _session(request) as session:
            try:
                principal, key = await _viewer(request, session)
            except SignedOut:
                return RedirectResponse("/dashboard/login", status_code=303)
            timeline = await service.call_timeline(
                session, tenant_id=principal.tenant_id, call_id=call_id
            )
    except OutdialError as exc:
        return templates.TemplateResponse(
            request, "notice.html", {"message": exc.message}, exc.status_code
        )
    context = {"timeline": timeline, "headers": json.dumps({"X-CSRF-Token": csrf_token(key)})}
    return templates.TemplateResponse(request, "call.html", context)


async def campaign_action(request: Request) -> Response:
    """Start, pause or resume a campaign, exactly as the API's own routes do."""
    campaign_id, action = request.path_params["campaign_id"], request.path_params["action"]
    if action not in ("start", "pause", "resume"):
        return HTMLResponse("Not found.", 404)
    async with _session(request) as session:
        try:
            principal, key = await _viewer(request, session)
        except SignedOut:
            return HTMLResponse("Signed out.", 401, headers={"HX-Redirect": "/dashboard/login"})
        if not _csrf_ok(request, key):
            return HTMLResponse("Forbidden.", 403)
        handlers = {
            # The page's buttons send no Idempotency-Key: nothing to claim or replay.
            "start": lambda: campaign_routes.start_campaign(
                campaign_id, session, principal, Once(None)
            ),
            "pause": lambda: campaign_routes.pause_campaign(campaign_id, session, principal),
            "resume": lambda: campaign_routes.resume_campaign(campaign_id, session, principal),
        }
        try:
            await handlers[action]()
            await session.commit()
        except OutdialError as exc:
            await session.rollback()
            return templates.TemplateResponse(
                request, "_notice.html", {"message": exc.message, "ok": False}
            )
    past = {"start": "started", "pause": "paused", "resume": "resumed"}[action]
    return templates.TemplateResponse(
        request, "_notice.html", {"message": f"Campaign {campaign_id} {past}.", "ok": True}
    )


def _session(request: Request) -> AsyncSession:
    session: AsyncSession = request.app.state.sessionmaker()
    return session


routes: list[BaseRoute] = [
    # Plain Starlette routes, not API routes: the dashboard is signed in by cookie, outside
    # the API's schema and its key-guarded routing table.
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/login", login_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/events", events, methods=["GET"]),
    Route("/dashboard/calls/{call_id}", call_page, methods=["GET"]),
    Route(
        "/dashboard/campaigns/{campaign_id}/{action:str}",
        campaign_action,
        methods=["POST"],
    ),
    Mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static"),
]
