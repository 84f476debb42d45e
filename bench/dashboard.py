"""What the dashboard's live updates cost the database: 50 viewers of one tenant's page.

    .venv/bin/python bench/dashboard.py [--viewers 50] [--seconds 10]

A real uvicorn server (API and dialer, SQLite, the simulated carrier) runs a campaign while
N simulated viewers hold the page's event stream open; every statement the server sends to
the database is counted. The yardstick is the same run with one viewer: the live updates'
cost should not grow with the number of viewers."""

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import event

from outdial import migrate
from outdial.app import create_app
from outdial.billing.service import to_micros
from outdial.config import Settings
from outdial.tenants import service as tenants


async def run(viewers: int, seconds: float) -> dict[str, float]:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    await migrate.upgrade(url)
    app = create_app(Settings(database_url=url, simulated_speed=20), with_dialer=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    async with app.state.sessionmaker() as session, session.begin():
        _, key = await tenants.create_tenant(
            session, name="bench", max_concurrency=50, calls_per_second=50,
            credits_micros=to_micros(10_000),
        )  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
        await api.post("/v1/numbers", json={"phone_number": "+15559990000"})
        agent = (await api.post("/v1/agents", json={"name": "a", "rate_per_minute": 0.1})).json()
        body = {"name": "bench", "agent_id": agent["id"], "call_from_number": "+15559990000",
                "settings": {"calls_per_second": 20, "max_concurrency": 20}}  # fmt: skip
        campaign_id = (await api.post("/v1/campaigns", json=body)).json()["campaign_id"]
        contacts = [{"phone_number": f"+1555{i:07d}"} for i in range(2000)]
        await api.post(f"/v1/campaigns/{campaign_id}/contacts", json={"contacts": contacts})
        await api.post(f"/v1/campaigns/{campaign_id}/start")

    statements: list[str] = []

    def note(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    events = [0] * viewers
    received = [0] * viewers
    stop = asyncio.Event()

    async def viewer(i: int) -> None:
        cookies = {"outdial_dashboard_key": key}
        async with httpx.AsyncClient(base_url=base, cookies=cookies, timeout=None) as client:
            async with client.stream("GET", "/dashboard/events") as stream:
                async for line in stream.aiter_lines():
                    received[i] += len(line) + 1
                    if line.startswith("event:"):
                        events[i] += 1
                    if stop.is_set():
                        return

    tasks = [asyncio.create_task(viewer(i)) for i in range(viewers)]
    while not all(events):  # noqa: ASYNC110 (every viewer has been sent the page once)
        await asyncio.sleep(0.05)
    event.listen(app.state.engine.sync_engine, "before_cursor_execute", note)
    before = sum(events)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    event.remove(app.state.engine.sync_engine, "before_cursor_execute", note)
    sent = sum(events) - before
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.should_exit = True
    await serving
    dashboard = [s for s in statements if "'queue'" in s or ("kind" in s and "UNION ALL" in s)]
    return {
        "viewers": viewers,
        "all_statements_per_s": len(statements) / elapsed,
        "dashboard_statements_per_s": len(dashboard) / elapsed,
        "events_per_viewer_per_s": sent / viewers / elapsed,
        "kb_per_viewer": sum(received) / viewers / 1024,
    }


async def snapshot_cost(rows: int) -> None:
    """How long one snapshot takes on PostgreSQL for a tenant with `rows` dial jobs and a
    running campaign of `rows` contacts (the statement a watched tenant costs per read)."""
    from scratch_db import create_pg_database, drop_pg_database
    from sqlalchemy import text

    from outdial.agents.models import Agent
    from outdial.dashboard.service import load_snapshot

    name, url = await create_pg_database()
    try:
        await migrate.upgrade(url)
        app = create_app(Settings(database_url=url))
        async with app.router.lifespan_context(app):
            async with app.state.sessionmaker() as session, session.begin():
                tenant, _ = await tenants.create_tenant(
                    session, name="big", max_concurrency=50, calls_per_second=10,
                    credits_micros=0,
                )  # fmt: skip
                agent = Agent(id=str(uuid.uuid4()), tenant_id=tenant.id, name="a")
                session.add(agent)
            tid = tenant.id
            async with app.state.engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO campaigns (id, tenant_id, agent_id, name, call_from_number,"
                    " status, settings, queued_through, contacts_left, created_at, updated_at)"
                    " SELECT 'cmp_big', :t, :a, 'big', '+15559990000', 'running', '{}',"
                    " '', true, now(), now()"
                ), {"t": tid, "a": agent.id})  # fmt: skip
                await conn.execute(text(
                    "INSERT INTO campaign_contacts (campaign_id, id, phone_number, variables,"
                    " status, created_at) SELECT 'cmp_big', 'contact_' || g, '+1555' || g,"
                    " '{}', CASE WHEN g % 3 = 0 THEN 'completed' ELSE 'pending' END, now()"
                    " FROM generate_series(1, :n) g"
                ), {"n": rows})  # fmt: skip
                await conn.execute(text(
                    "INSERT INTO dial_jobs (id, tenant_id, call_id, participant_id, status,"
                    " to_number, from_number, variables, attempt, max_attempts, run_at,"
                    " created_at) SELECT 'job_' || g, :t, 'call_' || g, 'p_' || g,"
                    " CASE WHEN g % 10 = 0 THEN 'waiting' ELSE 'completed' END, '+1555',"
                    " '+1555', '{}', 1, 1, now(), now() FROM generate_series(1, :n) g"
                ), {"t": tid, "n": rows})  # fmt: skip
            async with app.state.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE")
            times = []
            for _ in range(5):
                started = time.perf_counter()
                async with app.state.sessionmaker() as session:
                    await load_snapshot(session, tenant_id=tid, final_counts={}, key_digests=())
                times.append((time.perf_counter() - started) * 1000)
        best = min(times)
        print(
            f"snapshot of a tenant with {rows:,} jobs and a running {rows:,}-contact campaign "
            f"(PostgreSQL): best {best:.0f} ms, median {sorted(times)[2]:.0f} ms; read every "
            f"{max(1.0, best / 1000 * 10):.1f} s while watched (at most 1/10 of the time)"
        )
    finally:
        await drop_pg_database(name)


async def main(viewers: int, seconds: float, big: int) -> None:
    if big:
        await snapshot_cost(big)
        return
    for n in (1, viewers):
        r = await run(n, seconds)
        print(
            f"{r['viewers']:>3} viewer(s): dashboard snapshot statements "
            f"{r['dashboard_statements_per_s']:.2f}/s; every statement the server sent "
            f"(dialer included) {r['all_statements_per_s']:.1f}/s; "
            f"{r['events_per_viewer_per_s']:.2f} events/s per viewer, "
            f"{r['kb_per_viewer']:.0f} KiB received per viewer"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--big", type=int, default=0, help="Instead: time one snapshot of a tenant this big."
    )
    args = parser.parse_args()
    asyncio.run(main(args.viewers, args.seconds, args.big))
