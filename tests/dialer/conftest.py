import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from outdial.config import Settings
from outdial.dialer.worker import Dialer

RunDialer = Callable[..., Any]


@pytest.fixture
def cdr_path(tmp_path: Path) -> Path:
    return tmp_path / "cdr.jsonl"


def read_cdr(path: Path) -> list[dict[str, Any]]:
    """The simulated carrier's dial lines (one per dial it received); its media lines (one
    per answered call that carried a stream, `"kind": "media"`) are left out."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if "kind" not in line]


@asynccontextmanager
async def dialer_running(app: FastAPI, settings: Settings) -> AsyncIterator[Dialer]:
    """An in-process dialer with these settings, stopped gracefully when the `with` ends."""
    dialer = Dialer(app.state.sessionmaker, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(dialer.run(stop))
    try:
        yield dialer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def running_dialer(app: FastAPI, database_url: str, cdr_path: Path) -> RunDialer:
    """Run an in-process dialer (simulated carrier, fast) for the duration of a `with`."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[Dialer]:
        settings = Settings(
            database_url=database_url,
            simulated_speed=overrides.pop("simulated_speed", 200.0),
            simulated_cdr=str(cdr_path),
            dialer_poll_seconds=0.02,
            **overrides,
        )
        async with dialer_running(app, settings) as dialer:
            yield dialer

    return run


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.05
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)


async def queue_drained(client: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    stats = (await client.get("/v1/calls/queue/stats", headers=headers)).json()
    return stats["waiting"] == 0 and stats["active"] == 0
