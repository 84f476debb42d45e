import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from outdial import __version__
from outdial.agents.routes import router as agents_router
from outdial.billing.routes import router as billing_router
from outdial.calls.routes import router as calls_router
from outdial.campaigns.routes import router as campaigns_router
from outdial.config import Settings, get_settings
from outdial.dashboard.routes import close_feeds
from outdial.dashboard.routes import routes as dashboard_routes
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.routes import router as telephony_router
from outdial.dialer.worker import Dialer
from outdial.dnc.routes import router as dnc_router
from outdial.error_handlers import error_responses, install_error_handlers
from outdial.health import router as health_router
from outdial.keys.routes import router as keys_router
from outdial.numbers.routes import router as numbers_router
from outdial.observability.metrics import QueueGauge, RequestCounter
from outdial.observability.routes import metrics
from outdial.permissions.routes import router as permissions_router
from outdial.ratelimit.limiter import (
    RATE_LIMITED_RESPONSE,
    install_rate_limit_handler,
    make_rate_limiter,
)
from outdial.request_limits import RequestLimits
from outdial.webhooks.routes import router as webhooks_router
from outdial.webhooks.worker import run_webhooks
from outdial.wiring import plug_all


def api_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=error_responses(401) | RATE_LIMITED_RESPONSE)
    for domain in (
        keys_router,
        agents_router,
        numbers_router,
        permissions_router,
        dnc_router,
        billing_router,
        calls_router,
        campaigns_router,
        webhooks_router,
    ):
        router.include_router(domain)
    return router


def create_app(settings: Settings | None = None, *, with_dialer: bool = False) -> FastAPI:
    """The API; with `with_dialer`, a dialer runs in the same process (`outdial serve`)."""
    settings = settings or get_settings()
    plug_all()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.queue_gauge = QueueGauge(
            app.state.sessionmaker, max_age=settings.metrics_queue_max_age_seconds
        )
        app.state.queue_gauge.refresh_if_stale()
        app.state.rate_limiter = make_rate_limiter(engine, settings)
        stop = asyncio.Event()
        dialing = (
            asyncio.create_task(Dialer(app.state.sessionmaker, settings).run(stop))
            if with_dialer
            else None
        )
        # `outdial serve` sends webhooks too; `outdial webhooks` runs more delivery processes.
        delivering = asyncio.create_task(run_webhooks(settings, stop)) if with_dialer else None
        try:
            yield
        finally:
            stop.set()
            if dialing is not None:
                await dialing
            await app.state.queue_gauge.close()
            await close_feeds(app)
            if delivering is not None:
                await delivering
            await engine.dispose()

    app = FastAPI(
        title="outdial",
        version=__version__,
        summary="Outbound calling for AI voice agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestCounter)
    install_rate_limit_handler(app)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        body_idle_seconds=settings.body_idle_seconds,
        body_deadline_seconds=settings.body_deadline_seconds,
    )
    app.include_router(api_router())
    # Outside the API's key-guarded routes: /metrics has its own token, the dashboard a cookie.
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.router.routes.extend(dashboard_routes)
    # The seed's own paths (/campaigns…), the same handlers, kept out of the schema.
    app.include_router(
        campaigns_router,
        include_in_schema=False,
        responses=error_responses(401) | RATE_LIMITED_RESPONSE,
    )
    # Carriers' callbacks: signed by the carrier, so outside the API-key-guarded router.
    app.include_router(telephony_router, prefix="/v1")
    app.include_router(health_router)
    return app
