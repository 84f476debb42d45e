"""The abandonment rate in GET /v1/campaigns/{id}, and a campaign that crosses 3 % pausing
itself (paused_reason, campaign.paused); on both backends."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from outdial.calls.statuses import EndReason
from outdial.campaigns.abandonment import Abandonment
from outdial.campaigns.dialing import CampaignSource
from outdial.campaigns.models import CampaignAnswerDay
from outdial.db import utcnow
from outdial.dialer.settle import final_status
from outdial.dialer.sources import ParticipantChange
from outdial.webhooks.models import WebhookDelivery
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, fast_settings, post
from tests.conftest import create_agent, register_number
from tests.dialer.conftest import wait_until

UNREACHABLE_AGENT = "ws://127.0.0.1:9/nobody"  # port 9 (discard): nothing listens


@pytest.mark.parametrize(
    "answered, abandoned, crossed",
    [
        (1, 1, False),  # a campaign's first abandoned call does not pause it
        (10, 3, False),
        (10, 4, True),  # a fourth does, however few answers came before
        (100, 3, False),  # exactly 3 % is allowed
        (100, 4, True),
        (1000, 30, False),
        (1000, 31, True),
    ],
)
def test_the_limit_is_judged_over_at_least_100_answers(answered, abandoned, crossed) -> None:
    assert Abandonment(answered, abandoned).crossed is crossed


async def test_a_new_campaign_shows_no_abandonment(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    detail = await campaign(client, tenant, campaign_id)
    assert detail["abandonment"] == {
        "rate": 0.0,
        "answered": 0,
        "abandoned": 0,
        "window_days": 30,
        "limit": 0.03,
        "min_answered": 100,
    }
    assert detail["paused_reason"] is None


async def test_pause_says_it_was_requested_and_resume_clears_it(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    assert (await campaign(client, tenant, campaign_id))["paused_reason"] == "requested"
    listed = await client.get("/v1/campaigns", headers=tenant.headers)
    assert [c["paused_reason"] for c in listed.json()["data"]] == ["requested"]
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")).status_code == 200
    assert (await campaign(client, tenant, campaign_id))["paused_reason"] is None


async def settle_contacts(app, campaign_id: str, ends: list[tuple[str, EndReason]], **at) -> None:
    """Tell the campaign plug these contacts' calls ended, as the dialer's settle does."""
    when = at.get("at", utcnow())
    async with app.state.sessionmaker() as session, session.begin():
        await CampaignSource().participants_changed(
            session,
            changes=[
                ParticipantChange(
                    participant_id=f"participant_{number}",
                    tenant_id="ten_x",
                    status=final_status(reason),
                    at=when,
                    end_reason=reason,
                    campaign_id=campaign_id,
                    number=number,
                    dials=1,
                )
                for number, reason in ends
            ],
        )


async def test_each_answered_contact_counts_once(client, tenant, agent, app) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    numbers = [f"+155577700{i:02d}" for i in range(4)]
    await add_contacts(client, tenant, campaign_id, numbers)
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    ends = [
        (numbers[0], EndReason.ANSWERED),
        (numbers[1], EndReason.AGENT_UNAVAILABLE),
        (numbers[2], EndReason.VOICEMAIL),  # a machine: no person answered
        (numbers[3], EndReason.NO_ANSWER),
    ]
    await settle_contacts(app, campaign_id, ends)
    await settle_contacts(app, campaign_id, ends[:2])  # the same ends reported again
    detail = await campaign(client, tenant, campaign_id)
    assert detail["abandonment"]["answered"] == 2
    assert detail["abandonment"]["abandoned"] == 1
    assert detail["abandonment"]["rate"] == 0.5
    assert detail["answered"] == 2  # the contacts a person answered, as before
    assert (detail["contacts"]["completed"], detail["contacts"]["failed"]) == (2, 2)
    assert detail["status"] == "running"  # 1 abandoned call is below the 100-answer floor


async def test_only_the_last_30_days_count(client, tenant, agent, app) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    numbers = [f"+155577700{i:02d}" for i in range(5)]
    await add_contacts(client, tenant, campaign_id, numbers)
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    now = utcnow()
    old = [(n, EndReason.AGENT_UNAVAILABLE) for n in numbers[:4]]
    await settle_contacts(app, campaign_id, old, at=now - timedelta(days=30))
    await settle_contacts(app, campaign_id, [(numbers[4], EndReason.ANSWERED)], at=now)
    detail = await campaign(client, tenant, campaign_id)
    # Four abandoned calls would pause it, but 30 days ago is outside today and the 29
    # days before it; they were judged on their own day, which its rows record.
    assert detail["abandonment"] == {**detail["abandonment"], "answered": 1, "abandoned": 0}
    async with app.state.sessionmaker() as session:
        days = (
            await session.execute(
                select(CampaignAnswerDay.day, CampaignAnswerDay.answered).order_by(
                    CampaignAnswerDay.day
                )
            )
        ).all()
    assert [(d, n) for d, n in days] == [
        ((now - timedelta(days=30)).date(), 4),
        (now.date(), 1),
    ]


async def test_a_campaign_over_3_percent_pauses_itself(
    client, make_tenant, app, running_dialer, monkeypatch
) -> None:
    tenant = await make_tenant(calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    monkeypatch.setattr(app.state.settings, "webhook_allow_private_urls", True)
    hook = await client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["campaign.paused"]},
        headers=tenant.headers,
    )
    assert hook.status_code == 201, hook.text
    # An agent nobody can reach: every answered call is hung up agent_unavailable.
    agent = await create_agent(client, tenant, stream_url=UNREACHABLE_AGENT)
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(max_concurrency=2)
    )
    await add_contacts(client, tenant, campaign_id, [f"+155577700{i:02d}" for i in range(30)])
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200

    async def paused() -> bool:
        return (await campaign(client, tenant, campaign_id))["status"] == "paused"

    async with running_dialer():
        await wait_until(paused)
    detail = await campaign(client, tenant, campaign_id)
    assert detail["paused_reason"] == "abandonment_rate"
    abandonment = detail["abandonment"]
    assert abandonment["abandoned"] >= 4
    assert abandonment["answered"] == abandonment["abandoned"]
    # It stopped dialing: no more than the 4th abandoned call's concurrent dials ended after.
    assert detail["contacts"]["pending"] >= 30 - 4 - 2
    check = await client.get(f"/v1/campaigns/{campaign_id}/launch-check", headers=tenant.headers)
    [blocker] = check.json()["blockers"]
    assert blocker["code"] == "campaign_paused"
    assert "abandoned" in blocker["message"]
    async with app.state.sessionmaker() as session:
        events = list(
            await session.scalars(
                select(WebhookDelivery.payload).where(
                    WebhookDelivery.event_type == "campaign.paused"
                )
            )
        )
    assert len(events) == 1
    assert '"paused_reason":"abandonment_rate"' in events[0]

    # Resuming clears the reason; the rate is still over the limit, so the next abandoned
    # call pauses it again.
    resumed = await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")
    assert resumed.status_code == 200
    assert (await campaign(client, tenant, campaign_id))["paused_reason"] is None
    async with running_dialer():
        await wait_until(paused)
    again = await campaign(client, tenant, campaign_id)
    assert again["paused_reason"] == "abandonment_rate"
    assert again["abandonment"]["abandoned"] > abandonment["abandoned"]
