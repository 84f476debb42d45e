"""A dialer process's own `/metrics` listener (`outdial dialer --metrics-port P`)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.error_handlers import install_error_handlers
from outdial.observability.metrics import QueueGauge
from outdial.observability.routes import metrics


def metrics_app(settings: Settings) -> FastAPI:
    """An app that answers `/metrics` only, with the queue gauge read through its own engine."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.queue_gauge = QueueGauge(
            create_sessionmaker(engine), max_age=settings.metrics_queue_max_age_seconds
        )
        app.state.queue_gauge.refresh_if_stale()
        try:
            yield
        finally:
            await app.state.queue_gauge.close()
            await engine.dispose()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return app


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handlers: the dialer's own handle SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_metrics(settings: Settings, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `/metrics` on host:port until `stop` is set."""
    config = uvicorn.Config(
        metrics_app(settings), host=host, port=port, log_config=None, access_log=False
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving


class _ApiServer(uvicorn.Server):
    """uvicorn, which on SIGTERM/SIGINT also ends the dashboard's streams: it waits for every
    open response before running the app's shutdown, and a live page's stream never ends."""

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        from outdial.dashboard.routes import close_feeds

        super().handle_exit(sig, frame)
        app = self.config.app
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(close_feeds(app)))


def run_api_server(app: FastAPI, *, host: str, port: int) -> None:
    """Serve the API (and the dashboard) until SIGTERM or SIGINT."""
    _ApiServer(uvicorn.Config(app, host=host, port=port, log_config=None)).run()
