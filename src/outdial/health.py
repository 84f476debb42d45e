"""Liveness and readiness, for load balancers and orchestrators (no API key).

`/healthz` says the process serves HTTP, and nothing more: it never touches the database, so a
database outage does not get healthy API processes restarted. `/readyz` says whether this
process can do its work: 503 while it cannot reach its database, so that traffic goes
elsewhere until it can."""

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from outdial.errors import error_body

READY_TIMEOUT_SECONDS = 2.0
"""How long readiness waits for the database (a connection and `SELECT 1`)."""

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Live: the process answers HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> dict[str, str] | JSONResponse:
    """Ready: the database answers within READY_TIMEOUT_SECONDS."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc).splitlines()[0]
        log.warning("not ready: the database cannot be reached: %s", reason)
        return JSONResponse(
            error_body("database_unreachable", "The database cannot be reached."), 503
        )
    return {"status": "ready"}
