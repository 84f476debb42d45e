"""Pausing a campaign under load with several real `outdial dialer` processes on PostgreSQL:
judged from the simulated carrier's CDR (one line per dial it received, with the instant),
no dial starts after `pause` has answered; resumed, the campaign finishes with every contact
final and nobody dialed twice. PostgreSQL only: many dialers is the PostgreSQL deployment."""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from outdial.dialer.models import DialAttempt
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, open_window, post
from tests.conftest import create_agent, register_number
from tests.dialer.conftest import read_cdr
from tests.dialer.test_processes import fleet

# Multi-process tests run one after another on one xdist worker (make test runs two): each
# starts several outdial processes of its own, and two at once would starve both.
pytestmark = pytest.mark.xdist_group("processes")

__all__ = ["fleet"]  # the multi-process fixture of the dialer tests

CONTACTS = 1_500
DIALERS = 3
SETTINGS = {"simulated_speed": 40, "dialer_lease_seconds": 2, "dialer_poll_seconds": 0.05}


@pytest.fixture(autouse=True)
def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("multi-process dialing is the PostgreSQL deployment")


async def test_no_dial_starts_after_pause_answers_and_resume_finishes(
    client, make_tenant, fleet, cdr_path, app
) -> None:
    began = time.monotonic()
    tenant = await make_tenant(credits=1_000_000, max_concurrency=200, calls_per_second=400)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    settings = {
        "max_concurrency": 120,
        "calls_per_second": 150,
        "calling_window": open_window(),
        "ring_timeout_seconds": 15,
    }
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=settings)
    numbers = [f"+1555{i:07d}" for i in range(CONTACTS)]
    for start in range(0, CONTACTS, 1000):
        await add_contacts(client, tenant, campaign_id, numbers[start : start + 1000])
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.json()["contacts_dialed"] == CONTACTS
    for _ in range(DIALERS):
        fleet.start(**SETTINGS)

    deadline = time.monotonic() + 30
    while len(read_cdr(cdr_path)) < CONTACTS // 5:
        assert time.monotonic() < deadline, "\n".join(fleet.tail(d) for d in fleet.alive)
        await asyncio.sleep(0.05)
    asked = datetime.now(UTC)
    paused = await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")
    answered = datetime.now(UTC)
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"status": "paused", "id": campaign_id}

    await asyncio.sleep(3)  # any dial the pause failed to stop would have started by now
    cdr = read_cdr(cdr_path)
    instants = [datetime.fromisoformat(line["at"]) for line in cdr]
    after = [line for line, at in zip(cdr, instants, strict=True) if at > answered]
    assert after == [], f"{len(after)} dials started after pause answered"
    during = sum(1 for at in instants if asked < at <= answered)
    assert len(cdr) < CONTACTS, "the campaign finished before the pause: make it bigger"
    detail = await campaign(client, tenant, campaign_id)
    assert detail["status"] == "paused"
    assert detail["contacts"]["pending"] > 0
    print(
        f"\npause answered in {(answered - asked).total_seconds():.2f} s with {len(cdr)} of "
        f"{CONTACTS} dialed ({during} while it was being answered); none after it"
    )

    resumed = await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")
    assert resumed.json() == {"status": "running", "id": campaign_id}
    deadline = time.monotonic() + 90
    while (detail := await campaign(client, tenant, campaign_id))["status"] != "completed":
        assert time.monotonic() < deadline, (detail, fleet.tail(fleet.alive[0]))
        await asyncio.sleep(0.2)
    for dialer in fleet.alive:
        assert await fleet.stop(dialer, within=15) == 0, fleet.tail(dialer)

    counts = detail["contacts"]
    assert counts["pending"] == counts["dialed"] == 0
    assert counts["completed"] + counts["failed"] == CONTACTS
    cdr = read_cdr(cdr_path)
    assert [n for n, times in Counter(line["to"] for line in cdr).items() if times > 1] == []
    assert sorted(line["to"] for line in cdr) == numbers
    assert len({line["attempt_id"] for line in cdr}) == CONTACTS
    assert detail["attempts"] == CONTACTS
    async with app.state.sessionmaker() as session:
        dialers = Counter(await session.scalars(select(DialAttempt.dialer_id)))
    assert len(dialers) >= 2, f"one dialer did all the work: {dialers}"
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["held"] == 0
    print(
        f"resumed and finished by {len(dialers)} dialers; runtime {time.monotonic() - began:.1f} s"
    )
