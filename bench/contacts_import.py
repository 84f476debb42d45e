"""Benchmark: import 1,000,000 campaign contacts as a streamed CSV through the HTTP API, then
`start` the campaign (its DNC scrub included) against a 1,000,000-number DNC list.

Starts `outdial api` (uvicorn, one process) on a fresh SQLite file and on a fresh PostgreSQL
database, uploads the CSV in 64 KiB chunks from a generator (the client never holds it
either), and prints rows per second, the server's peak resident memory (VmHWM), and how long
`start` takes. The DNC list is seeded directly with one SQL statement; 20,000 of its numbers
are in the campaign. Run: `.venv/bin/python bench/contacts_import.py [--rows N]`.
Targets (issue 4): >= 100,000 rows/s into PostgreSQL, peak memory < 300 MB, start < 10 s."""

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
from batch_api import free_port, outdial, server
from scratch_db import create_pg_database, drop_pg_database

CHUNK_BYTES = 64 * 1024
DNC_NUMBERS = 1_000_000
DNC_OVERLAP = 20_000


def number(i: int) -> str:
    return f"+1555{i:07d}"


def csv_body(rows: int) -> Iterator[bytes]:
    """The CSV in 64 KiB pieces, made as it is sent."""
    pending = ["phone_number,first_name,plan,timezone\n"]
    size = len(pending[0])
    for i in range(rows):
        line = f"1555{i:07d},Person {i},{'Gold' if i % 3 else 'Silver'},America/Chicago\n"
        pending.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(pending).encode()
            pending, size = [], 0
    yield "".join(pending).encode()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def seed_dnc_sqlite(path: str, tenant_id: str) -> None:
    first = 1_000_000 - DNC_OVERLAP  # the last DNC_OVERLAP contacts, then numbers beyond
    with sqlite3.connect(path) as db:
        db.execute(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
            "INSERT INTO dnc_entries (tenant_id, phone_number, reason, source, created_at) "
            "SELECT ?, printf('+1555%07d', i + ?), NULL, 'bench', '2026-01-01 00:00:00.000000' "
            "FROM s",
            (DNC_NUMBERS - 1, tenant_id, first),
        )


async def seed_dnc_postgres(url: str, tenant_id: str) -> None:
    first = 1_000_000 - DNC_OVERLAP
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO dnc_entries (tenant_id, phone_number, reason, source, created_at) "
            "SELECT $1, '+1555' || lpad((i + $2)::text, 7, '0'), NULL, 'bench', now() "
            "FROM generate_series(0, $3 - 1) AS i",
            tenant_id,
            first,
            DNC_NUMBERS,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def run(database_url: str, rows: int, seed_dnc) -> dict[str, float]:
    env = {**os.environ, "OUTDIAL_DATABASE_URL": database_url}
    outdial(env, "migrate")
    tenant = json.loads(outdial(env, "tenant", "create", "--name", "bench", "--credits", "1e6"))
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    port = free_port()
    with (
        server(env, port) as base,
        httpx.Client(base_url=base, headers=headers, timeout=600) as http,
    ):
        pid = server_pid(port)
        http.post("/v1/numbers", json={"phone_number": "+15550000000"}).raise_for_status()
        agent = http.post("/v1/agents", json={"name": "bench", "rate_per_minute": 0.1})
        created = http.post(
            "/v1/campaigns",
            json={
                "agent_id": agent.raise_for_status().json()["id"],
                "name": "bench",
                "call_from_number": "+15550000000",
            },
        )
        campaign_id = created.raise_for_status().json()["campaign_id"]
        rss_before = peak_rss_mb(pid)
        t0 = time.perf_counter()
        response = http.post(
            f"/v1/campaigns/{campaign_id}/contacts",
            content=csv_body(rows),
            headers={"Content-Type": "text/csv"},
        )
        upload = time.perf_counter() - t0
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["inserted_count"] == rows, result
        peak = peak_rss_mb(pid)

        seed_dnc(tenant["tenant_id"])
        t0 = time.perf_counter()
        started = http.post(f"/v1/campaigns/{campaign_id}/start")
        start = time.perf_counter() - t0
        assert started.status_code == 200, started.text
        counts = started.json()
    return {
        "rows": rows,
        "upload_s": upload,
        "rows_per_s": rows / upload,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "start_s": start,
        "dialed": counts["contacts_dialed"],
        "skipped": counts["contacts_skipped_dnc"],
    }


def server_pid(port: int) -> int:
    """The pid of the process listening on `port` (the `outdial api` server)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inode = fields[9]
    assert inode is not None, "server socket not found"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise RuntimeError("server process not found")


def print_figures(backend: str, f: dict[str, float]) -> None:
    print(
        f"{backend:>10}: {f['rows']:,} rows in {f['upload_s']:.1f} s = {f['rows_per_s']:,.0f} "
        f"rows/s; server peak RSS {f['peak_rss_mb']:.0f} MB ({f['rss_before_mb']:.0f} MB "
        f"before the upload); start {f['start_s']:.2f} s "
        f"({f['dialed']:,} to the dialer, {f['skipped']:,} skipped for DNC)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    print(
        f"{args.rows:,} contacts as one streamed CSV upload; start against {DNC_NUMBERS:,} "
        f"DNC numbers ({DNC_OVERLAP:,} of them in the campaign)"
    )
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "bench.db")
            figures = run(f"sqlite:///{path}", args.rows, lambda t: seed_dnc_sqlite(path, t))
        print_figures("sqlite", figures)
    if args.backend in ("postgresql", "both"):
        name, url = asyncio.run(create_pg_database())
        try:
            figures = run(url, args.rows, lambda t: asyncio.run(seed_dnc_postgres(url, t)))
            print_figures("postgresql", figures)
        finally:
            asyncio.run(drop_pg_database(name))


if __name__ == "__main__":
    main()
