"""Benchmark: the launch check (campaigns/launch.py) of a campaign with a million contacts.

Run: `.venv/bin/python bench/launch_check.py [--contacts N]`. On a fresh SQLite file and a
fresh PostgreSQL database: one tenant, agent, caller ID and campaign, N contacts with US
numbers spread over real area codes (written straight into the table, as fast as each backend
takes them), and a do-not-call list of 100,000 numbers. Times `check_launch` (median of 5,
after one warm-up) for: a draft whose window is open, the same with the window shut (every
sampled group judged and found closed), and a running campaign whose first 90 % of contacts
are done (the dialer's reach starts past them).
Goal (issue 13): fast whatever the list's size, no per-contact work beyond a bounded sample.
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scratch_db import create_pg_database, drop_pg_database
from sqlalchemy import text, update

from outdial import migrate
from outdial.billing.service import to_micros
from outdial.campaigns.launch import check_launch
from outdial.campaigns.models import Campaign
from outdial.db import create_engine, create_sessionmaker, utcnow
from outdial.ids import new_id
from outdial.tenants import service as tenants
from outdial.wiring import plug_all

AREA_CODES = [
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224,
    225, 228, 229, 231, 234, 239, 240, 248, 251, 252, 253, 254, 256, 260, 262, 267, 269, 270,
    276, 281, 301, 302, 303, 304, 305, 307, 308, 309, 310, 312, 313, 314, 315, 316, 317, 318,
    319, 320, 321, 323, 325, 330, 334, 336, 337, 339, 347, 351, 352, 360, 361, 386, 401, 402,
    404, 405, 406, 407, 408, 409, 410, 412, 413, 414, 415, 417, 419, 423, 424, 425, 432, 434,
    435, 440, 443, 469, 470, 478, 479, 480, 484, 501, 502, 503, 504, 505, 507, 508, 509, 510,
    512, 513, 515, 516, 517, 518, 520, 530, 540, 541, 551, 559, 561, 562, 563, 567, 570, 571,
    573, 574, 575, 580, 585, 586, 601, 602, 603, 605, 606, 607, 608, 609, 610, 612, 614, 615,
    616, 617, 618, 619, 620, 623, 626, 630, 631, 636, 641, 646, 650, 651, 660, 661, 662, 678,
    701, 702, 703, 704, 706, 707, 708, 712, 713, 714, 715, 716, 717, 718, 719, 720, 724, 727,
    731, 732, 734, 740, 757, 760, 763, 765, 770, 772, 773, 774, 775, 781, 785, 786, 801, 802,
    803, 804, 805, 806, 808, 810, 812, 813, 814, 815, 816, 817, 818, 828, 830, 831, 832, 843,
    845, 847, 850, 856, 857, 858, 859, 860, 862, 863, 864, 865, 870, 901, 903, 904, 906, 907,
    908, 909, 910, 912, 913, 914, 915, 916, 917, 918, 919, 920, 925, 928, 931, 936, 937, 940,
    941, 949, 951, 952, 954, 956, 970, 971, 972, 973, 978, 979, 980, 985, 989,
]  # fmt: skip
CHUNK = 50_000


def numbers(count: int) -> list[str]:
    rng = random.Random(13)
    chosen: set[str] = set()
    while len(chosen) < count:
        area = rng.choice(AREA_CODES)
        chosen.add(f"+1{area}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}")
    return sorted(chosen, key=lambda _: rng.random())


async def setup(url: str, count: int) -> tuple[object, str, list[str]]:
    await migrate.upgrade(url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        tenant, _ = await tenants.create_tenant(
            session, name="bench", max_concurrency=50, calls_per_second=1,
            credits_micros=to_micros(1000),
        )  # fmt: skip
        agent_id = "00000000-0000-4000-8000-000000000001"
        now = utcnow()
        await session.execute(
            text(
                "INSERT INTO agents (id, tenant_id, name, rate_per_minute_micros, "
                "voicemail_behavior, post_call, config, stream_secret, created_at, updated_at) "
                "VALUES (:id, :t, 'a', 100000, 'hangup', '{}', '{}', 'whsec_x', :now, :now)"
            ),
            {"id": agent_id, "t": tenant.id, "now": now},
        )
        await session.execute(
            text(
                "INSERT INTO phone_numbers (phone_number, tenant_id, is_default, created_at) "
                "VALUES ('+15559990000', :t, true, :now)"
            ),
            {"t": tenant.id, "now": now},
        )
        campaign_id = new_id("cmp")
        session.add(
            Campaign(
                id=campaign_id, tenant_id=tenant.id, agent_id=agent_id, name="bench",
                call_from_number="+15559990000", status="draft",
                settings={
                    "max_concurrency": 10, "calls_per_second": 1.0,
                    "calling_window": {
                        "start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed",
                        "thu", "fri", "sat", "sun"], "timezone": "recipient",
                        "fallback_timezone": "UTC",
                    },
                    "retry": {"max_attempts": 1, "on": ["busy", "no_answer"],
                              "delay_seconds": 3600},
                    "ring_timeout_seconds": 30,
                },
                queued_through="", contacts_left=True, created_at=now, updated_at=now,
            )
        )  # fmt: skip
    ids = [f"contact_{i:012d}" for i in range(count)]
    started = time.perf_counter()
    for lo in range(0, count, CHUNK):
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO campaign_contacts (campaign_id, id, phone_number, variables, "
                    "status, created_at) VALUES (:c, :id, :n, '{}', 'pending', :now)"
                ),
                [
                    {"c": campaign_id, "id": ids[i], "n": n, "now": now}
                    for i, n in enumerate(numbers_cache[lo : lo + CHUNK], start=lo)
                ],
            )
    # A do-not-call list of 100,000 numbers, one contact in a hundred among them.
    dnc = numbers_cache[::100] + [f"+1555{i:07d}" for i in range(100_000 - count // 100)]
    for lo in range(0, len(dnc), CHUNK):
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO dnc_entries (tenant_id, phone_number, source, created_at) "
                    "VALUES (:t, :n, 'api', :now)"
                ),
                [{"t": tenant.id, "n": n, "now": now} for n in dnc[lo : lo + CHUNK]],
            )
    async with sessions() as session, session.begin():
        if url.startswith("postgresql"):
            await session.execute(text("ANALYZE"))
    print(f"  {count:,} contacts written in {time.perf_counter() - started:.1f} s")
    return engine, campaign_id, ids


async def timed(sessions, campaign_id: str, now: datetime) -> tuple[float, list[str]]:
    runs = []
    codes: list[str] = []
    for _ in range(6):
        async with sessions() as session:
            campaign = await session.get(Campaign, campaign_id, populate_existing=True)
            started = time.perf_counter()
            check = await check_launch(session, campaign=campaign, now=now)
            runs.append(time.perf_counter() - started)
            codes = [str(b.code) for b in check.blockers]
    return statistics.median(runs[1:]) * 1000, codes


async def bench(label: str, url: str, count: int) -> None:
    print(label)
    engine, campaign_id, ids = await setup(url, count)
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    ms, codes = await timed(sessions, campaign_id, now)
    print(f"  draft, window open:              {ms:7.1f} ms  blockers {codes}")
    shut = (now + timedelta(hours=12)).strftime("%H:%M")
    reopen = (now + timedelta(hours=13)).strftime("%H:%M")
    async with sessions() as session, session.begin():
        campaign = await session.get(Campaign, campaign_id)
        settings = dict(campaign.settings)
        settings["calling_window"] = {**settings["calling_window"], "start": shut, "end": reopen}
        await session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(settings=settings)
        )
    ms, codes = await timed(sessions, campaign_id, now)
    print(f"  draft, window shut:              {ms:7.1f} ms  blockers {codes}")
    done = ids[int(count * 0.9)]
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE campaign_contacts SET status = 'completed' "
                "WHERE campaign_id = :c AND id <= :done"
            ),
            {"c": campaign_id, "done": done},
        )
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status="running", queued_through=done)
        )
        if url.startswith("postgresql"):
            await session.execute(text("ANALYZE campaign_contacts"))
    ms, codes = await timed(sessions, campaign_id, now)
    print(f"  running, 90 % done, window shut: {ms:7.1f} ms  blockers {codes}")
    await engine.dispose()


numbers_cache: list[str] = []


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    args = parser.parse_args()
    plug_all()
    numbers_cache.extend(numbers(args.contacts))
    with tempfile.TemporaryDirectory() as tmp:
        await bench("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.contacts)
    name, url = await create_pg_database()
    try:
        await bench("PostgreSQL", url, args.contacts)
    finally:
        await drop_pg_database(name)


if __name__ == "__main__":
    asyncio.run(main())
