"""Benchmark: import a 10,000,000-number do-not-call list through `POST /v1/dnc/import`.

Writes the CSV file once (`phone_number` header, +15550000000 … +15559999999), then in the
same run:
- yardsticks: PostgreSQL's own `COPY … FROM STDIN` of that file (through asyncpg) into an
  unindexed table, the physical limit of loading it, and into a table shaped and keyed like
  the do-not-call list, the limit for this schema;
- outdial: `outdial api` (uvicorn, one process) on a fresh PostgreSQL database (and, with
  `--backend both`, a fresh SQLite file), the file streamed to it in 64 KiB pieces with an
  Idempotency-Key; rows per second over the whole request, and the server's peak resident
  memory (VmHWM);
- with `--again`, the same file a second time (every number a duplicate, the monthly
  re-import of a registry).

Run: `.venv/bin/python bench/dnc_import.py [--rows N] [--backend postgresql|sqlite|both]`.
Targets (issue 13): >= 200,000 rows/s into PostgreSQL, peak RSS <= 200 MB."""

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
from batch_api import free_port, outdial, server
from contacts_import import peak_rss_mb, server_pid
from scratch_db import create_pg_database, drop_pg_database

PIECE = 64 * 1024


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("phone_number\n")
        for start in range(0, rows, 100_000):
            f.write("".join(f"+1555{i:07d}\n" for i in range(start, min(rows, start + 100_000))))


def pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            yield piece


async def apieces(path: Path) -> AsyncIterator[bytes]:
    for piece in pieces(path):
        yield piece


async def yardsticks(url: str, path: Path, rows: int) -> tuple[float, float]:
    """Rows per second of PostgreSQL's own COPY of the file into an unindexed table (the
    physical limit), and into a table shaped and keyed like the do-not-call list (the limit
    for this schema: the primary key has to be maintained whatever the client does)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE unindexed (phone_number text)")
        await conn.execute(
            "CREATE TABLE keyed ("
            f"tenant_id varchar(40) NOT NULL DEFAULT '{'ten_' + 'x' * 26}', "
            "phone_number varchar(16) NOT NULL, reason varchar(500), "
            "source varchar(16) NOT NULL DEFAULT 'import', "
            "created_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (tenant_id, phone_number))"
        )
        rates = []
        for table in ("unindexed", "keyed"):
            started = time.perf_counter()
            await conn.copy_to_table(
                table, source=apieces(path), columns=["phone_number"], format="csv", header=True
            )
            rates.append(rows / (time.perf_counter() - started))
            await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    return rates[0], rates[1]


def run(database_url: str, path: Path, rows: int, again: bool) -> list[dict[str, float]]:
    env = {**os.environ, "OUTDIAL_DATABASE_URL": database_url}
    outdial(env, "migrate")
    tenant = json.loads(outdial(env, "tenant", "create", "--name", "bench"))
    headers = {"Authorization": f"Bearer {tenant['api_key']}", "Content-Type": "text/csv"}
    port = free_port()
    figures = []
    with (
        server(env, port) as base,
        httpx.Client(base_url=base, headers=headers, timeout=3600) as http,
    ):
        pid = server_pid(port)
        rss_before = peak_rss_mb(pid)
        for attempt in range(2 if again else 1):
            started = time.perf_counter()
            response = http.post(
                "/v1/dnc/import",
                content=pieces(path),
                headers={"Idempotency-Key": f"bench-{attempt}"},
            )
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            answer = response.json()
            expected = (0, rows) if attempt else (rows, 0)
            assert (answer["inserted_count"], answer["duplicate_count"]) == expected, answer
            figures.append(
                {
                    "rows": rows,
                    "seconds": elapsed,
                    "rows_per_s": rows / elapsed,
                    "rss_before_mb": rss_before,
                    "peak_rss_mb": peak_rss_mb(pid),
                    "again": attempt,
                }
            )
    return figures


def print_figures(
    backend: str, figures: list[dict[str, float]], limits: tuple[float, float] | None
) -> None:
    for f in figures:
        what = "again (all duplicates)" if f["again"] else "new list"
        ratio = (
            f"; {f['rows_per_s'] / limits[0]:.2f} of the unindexed COPY, "
            f"{f['rows_per_s'] / limits[1]:.2f} of the keyed one"
            if limits
            else ""
        )
        print(
            f"{backend:>10} {what}: {f['rows']:,} rows in {f['seconds']:.1f} s = "
            f"{f['rows_per_s']:,.0f} rows/s{ratio}; server peak RSS {f['peak_rss_mb']:.0f} MB "
            f"({f['rss_before_mb']:.0f} MB before)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="postgresql")
    parser.add_argument("--again", action="store_true", help="import the same file twice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dnc.csv"
        write_csv(path, args.rows)
        print(f"{args.rows:,} numbers, {path.stat().st_size / 1e6:,.0f} MB of CSV")
        limits = None
        if args.backend in ("postgresql", "both"):
            name, url = asyncio.run(create_pg_database())
            try:
                limits = asyncio.run(yardsticks(url, path, args.rows))
                print(
                    f"{'yardstick':>10}: PostgreSQL's COPY of the file: {limits[0]:,.0f} rows/s "
                    f"into an unindexed table, {limits[1]:,.0f} rows/s into one keyed like "
                    "the list"
                )
                print_figures("postgresql", run(url, path, args.rows, args.again), limits)
            finally:
                asyncio.run(drop_pg_database(name))
        if args.backend in ("sqlite", "both"):
            figures = run(f"sqlite:///{Path(tmp) / 'bench.db'}", path, args.rows, args.again)
            print_figures("sqlite", figures, None)


if __name__ == "__main__":
    main()
