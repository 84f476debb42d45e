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
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.worker import Dialer
from outdial.dnc.routes import router as dnc_router
from outdial.errors import error_responses, install_error_handlers
from outdial.keys.routes import router as keys_router
from outdial.numbers.routes import router as numbers_router
from outdial.telephony.routes import router as telephony_router


def api_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=error_responses(401))
    for domain in (
        keys_router,
        agents_router,
        numbers_router,
        dnc_router,
        billing_router,
        calls_router,
        campaigns_router,
    ):
        router.include_router(domain)
    return router


def create_app(settings: Settings | None = None, *, with_dialer: bool = False) -> FastAPI:
    """The API; with `with_dialer`, a dialer runs in the same process (`outdial serve`)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        stop = asyncio.Event()
        dialing = (
            asyncio.create_task(Dialer(app.state.sessionmaker, settings).run(stop))
            if with_dialer
            else None
        )
        try:
            yield
        finally:
            stop.set()
            if dialing is not None:
                await dialing
            await engine.dispose()

    app = FastAPI(
        title="outdial",
        version=__version__,
        summary="Outbound calling for AI voice agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(api_router())
    # The seed's own paths (/campaigns…), the same handlers, kept out of the schema.
    app.include_router(campaigns_router, include_in_schema=False, responses=error_responses(401))
    # Carriers' callbacks: signed by the carrier, so outside the API-key-guarded router.
    app.include_router(telephony_router, prefix="/v1")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
