"""GET /v1/calls/{id}/attempts: every dial of a call, with its provider, caller ID, times,
outcome and the checks that allowed it (API.md, "Calls"); the simulated carrier's CDR is the
ground truth of what was dialed."""

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.campaigns.conftest import open_window
from tests.conftest import TenantHandle, error_code
from tests.dialer.conftest import cdr_path, queue_drained, read_cdr, running_dialer, wait_until
from tests.dialer.test_rules import post_batch

__all__ = ["cdr_path", "running_dialer"]  # the dialer tests' fixtures, used here too

ATTEMPT_KEYS = {
    "id",
    "participant_id",
    "attempt",
    "status",
    "provider",
    "provider_call_id",
    "from_number",
    "to_number",
    "created_at",
    "dial_at",
    "placed_at",
    "answered_at",
    "answered_by",
    "ended_at",
    "end_reason",
    "talk_seconds",
    "checks",
}


async def attempts(
    client: httpx.AsyncClient, tenant: TenantHandle, call_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/calls/{call_id}/attempts", params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_attempt_with_the_checks_that_allowed_it(
    client, tenant, agent, running_dialer, cdr_path
) -> None:
    window = open_window()
    numbers = ["+15559990001", "+15559990085"]  # answered; busy, then busy again
    queued = await post_batch(
        client,
        tenant,
        agent,
        numbers,
        calling_window=window,
        retry={"max_attempts": 2, "on": ["busy"], "delay_seconds": 0},
        state_rules=True,
        max_attempts_per_24h=2,
    )
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)

    page = await attempts(client, tenant, queued["id"])
    assert page["next_cursor"] is None
    cdr = read_cdr(cdr_path)
    assert len(page["data"]) == len(cdr) == 3
    assert sorted(a["id"] for a in page["data"]) == sorted(line["attempt_id"] for line in cdr)
    assert [a["id"] for a in page["data"]] == sorted(a["id"] for a in page["data"])
    by_number: dict[str, list[dict[str, Any]]] = {}
    for a in page["data"]:
        assert set(a) == ATTEMPT_KEYS
        by_number.setdefault(a["to_number"], []).append(a)
    (answered,) = by_number["+15559990001"]
    first, second = by_number["+15559990085"]
    assert (answered["status"], answered["end_reason"], answered["answered_by"]) == (
        "ended",
        "answered",
        "human",
    )
    assert answered["talk_seconds"] > 0 and answered["provider_call_id"]
    assert [(a["attempt"], a["status"], a["end_reason"]) for a in (first, second)] == [
        (1, "ended", "busy"),
        (2, "ended", "busy"),
    ]
    for a in page["data"]:
        assert (a["provider"], a["from_number"]) == ("simulated", "+15559990000")
        created, ended = _at(a["created_at"]), _at(a["ended_at"])
        assert _at(a["dial_at"]) <= ended and created <= _at(a["placed_at"]) <= ended
        checks = a["checks"]
        assert set(checks) == {
            "dnc",
            "caller_id",
            "agent",
            "credit",
            "window",
            "state_rule",
            "frequency",
        }
        assert checks["dnc"]["listed"] is False
        checked_at = _at(checks["dnc"]["checked_at"])
        assert created - timedelta(seconds=1) <= checked_at <= created
        assert checks["caller_id"] == {"number": "+15559990000", "owned": True}
        assert checks["agent"] == {"exists": True}
        assert 0 < checks["credit"]["available"] <= balance["balance"]
        (zone,) = checks["window"]["zones"]
        # The +1555 numbers have no zone: judged in the window's fallback, UTC.
        assert zone["zone"] == "UTC"
        assert _at(zone["local_time"]) == checked_at
        assert {k: checks["window"][k] for k in ("start", "end")} == {
            "start": window["start"],
            "end": window["end"],
        }
        assert checks["window"]["days"] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        assert checks["state_rule"] is None  # +1555 is in no state
        assert checks["frequency"]["limit"] == 2
        assert "501.616" in checks["frequency"]["source"]
    assert answered["checks"]["frequency"]["dials_in_24h"] == 0
    assert [a["checks"]["frequency"]["dials_in_24h"] for a in (first, second)] == [0, 1]


async def test_attempts_without_rules_say_so_and_page_like_every_list(
    client, tenant, agent, running_dialer
) -> None:
    numbers = [f"+1555999000{n}" for n in range(5)]
    queued = await post_batch(client, tenant, agent, numbers)
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)
    seen: list[str] = []
    page = await attempts(client, tenant, queued["id"], limit=2)
    while True:
        assert len(page["data"]) <= 2
        for a in page["data"]:
            assert a["checks"]["window"] is None
            assert a["checks"]["state_rule"] is None
            assert a["checks"]["frequency"] is None
            seen.append(a["id"])
        if page["next_cursor"] is None:
            break
        page = await attempts(client, tenant, queued["id"], limit=2, after=page["next_cursor"])
    assert len(seen) == 5 and seen == sorted(seen)
    assert sorted(
        a["to_number"] for a in (await attempts(client, tenant, queued["id"]))["data"]
    ) == sorted(numbers)


async def test_a_call_not_yet_dialed_has_no_attempts(client, tenant, agent) -> None:
    queued = await post_batch(client, tenant, agent, ["+15559990001"])
    assert await attempts(client, tenant, queued["id"]) == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "status"),
    [({"limit": 0}, 400), ({"limit": 1001}, 400), ({"after": "garbage"}, 400)],
)
async def test_bad_paging_is_a_400(client, tenant, agent, params, status) -> None:
    queued = await post_batch(client, tenant, agent, ["+15559990001"])
    response = await client.get(
        f"/v1/calls/{queued['id']}/attempts", params=params, headers=tenant.headers
    )
    assert response.status_code == status, response.text
    assert error_code(response) == "validation_error"


async def test_another_tenants_call_and_an_unknown_one_are_404(
    client, tenant, agent, make_tenant
) -> None:
    queued = await post_batch(client, tenant, agent, ["+15559990001"])
    other = await make_tenant()
    for who, call_id in ((other, queued["id"]), (tenant, "call_0000000000000000000000000000")):
        response = await client.get(f"/v1/calls/{call_id}/attempts", headers=who.headers)
        assert response.status_code == 404, response.text
        assert error_code(response) == "call_not_found"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
