"""A server with live dashboard pages open still stops promptly on SIGTERM (uvicorn waits for
open responses before it stops, and a page's event stream never ends by itself)."""

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx

from outdial import migrate
from outdial.billing.service import to_micros
from outdial.dashboard.routes import COOKIE
from outdial.db import create_engine, create_sessionmaker
from outdial.tenants import service as tenants


async def test_sigterm_ends_open_dashboard_streams(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'api.db'}"
    await migrate.upgrade(database_url)
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session, session.begin():
        _, key = await tenants.create_tenant(
            session, name="t", max_concurrency=1, calls_per_second=1, credits_micros=to_micros(1)
        )
    await engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    env |= {"OUTDIAL_DATABASE_URL": database_url, "OUTDIAL_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "outdial"),
        "api",
        "--port",
        "0",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited"
                found = re.search(r"Uvicorn running on (http://[0-9.:]+)", line)
                url = found.group(1) if found else None
        async with httpx.AsyncClient(base_url=url, cookies={COOKIE: key}, timeout=30) as page:
            async with page.stream("GET", "/dashboard/events") as stream:
                lines = stream.aiter_lines()
                async with asyncio.timeout(10):
                    while not (await anext(lines)).startswith("event: queue"):
                        pass
                process.send_signal(signal.SIGTERM)
                stopping = time.monotonic()
                async with asyncio.timeout(10):  # uvicorn alone would wait forever
                    async for _ in lines:
                        pass
                    # uvicorn re-raises the signal once it has shut down gracefully
                    assert await process.wait() in (0, -signal.SIGTERM)
        assert time.monotonic() - stopping < 10
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
