"""The abandonment rate: of a campaign's calls a person answered over the last 30 days, the
share that ended `agent_unavailable` (answered, and nobody spoke: an abandoned call). The
FTC's Telemarketing Sales Rule allows at most 3 % of the calls a person answers to be
abandoned, measured per campaign over a 30-day period (16 CFR 310.4(b)(4)(i)); a campaign
that crosses it pauses itself (`paused_reason` `abandonment_rate`).

The counts are kept per campaign and UTC day as contacts settle (`count_answers`, from the
campaign plug's `participants_changed`), so the 30 days are at most 30 rows to read. The rate
is judged when an abandoned call is counted (an answered one can only lower it), over at least
`MIN_ANSWERED` answers: a campaign has crossed the limit when abandoned > 3 % of
max(answered, 100). One abandoned call among a campaign's first ten answers (10 %) does not
pause it, but a fourth abandoned call does, however few answers came before."""

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.campaigns.models import Campaign, CampaignAnswerDay
from outdial.campaigns.statuses import CampaignStatus, PausedReason
from outdial.db import dialect_insert, utcnow

WINDOW_DAYS = 30
"""Today (UTC) and the 29 days before it."""
LIMIT_PERCENT = 3
MIN_ANSWERED = 100

DAYS = CampaignAnswerDay.__table__


@dataclass(frozen=True, slots=True)
class Abandonment:
    answered: int
    abandoned: int

    @property
    def rate(self) -> float:
        return self.abandoned / self.answered if self.answered else 0.0

    @property
    def crossed(self) -> bool:
        """Over the limit, judged over at least MIN_ANSWERED answers."""
        return self.abandoned * 100 > LIMIT_PERCENT * max(self.answered, MIN_ANSWERED)


@dataclass(frozen=True, slots=True)
class Answer:
    """One contact's call that a person answered, as it settled."""

    campaign_id: str
    day: date
    abandoned: bool


async def count_answers(
    session: AsyncSession, *, answers: Sequence[Answer]
) -> list[tuple[str, str]]:
    """Add these answers to their campaigns' daily counts (one upsert; its rows in key order,
    so two settling transactions lock them alike), then pause those of the campaigns with a
    newly abandoned call that have crossed the limit; answers those it paused (campaign id,
    tenant id), for their `campaign.paused` events."""
    if not answers:
        return []
    answered = Counter((a.campaign_id, a.day) for a in answers)
    abandoned = Counter((a.campaign_id, a.day) for a in answers if a.abandoned)
    insert = dialect_insert(session, DAYS)
    await session.execute(
        insert.values(
            [
                {"campaign_id": c, "day": d, "answered": n, "abandoned": abandoned[(c, d)]}
                for (c, d), n in sorted(answered.items())
            ]
        ).on_conflict_do_update(
            index_elements=[DAYS.c.campaign_id, DAYS.c.day],
            set_={
                "answered": DAYS.c.answered + insert.excluded.answered,
                "abandoned": DAYS.c.abandoned + insert.excluded.abandoned,
            },
        )
    )
    return await pause_abandoning(session, campaign_ids={c for c, _ in abandoned})


async def abandonment_of(
    session: AsyncSession, *, campaign_ids: Collection[str], today: date
) -> dict[str, Abandonment]:
    """Each campaign's answers and abandoned calls over the window ending `today`."""
    if not campaign_ids:
        return {}
    rows = await session.execute(
        select(
            CampaignAnswerDay.campaign_id,
            func.sum(CampaignAnswerDay.answered),
            func.sum(CampaignAnswerDay.abandoned),
        )
        .where(
            CampaignAnswerDay.campaign_id.in_(sorted(campaign_ids)),
            CampaignAnswerDay.day > today - timedelta(days=WINDOW_DAYS),
        )
        .group_by(CampaignAnswerDay.campaign_id)
    )
    found = {c: Abandonment(int(answered), int(abandoned)) for c, answered, abandoned in rows}
    return {c: found.get(c, Abandonment(0, 0)) for c in campaign_ids}


async def pause_abandoning(
    session: AsyncSession, *, campaign_ids: Collection[str]
) -> list[tuple[str, str]]:
    """Pause those of these running campaigns that have crossed the limit, saying why;
    answers those it paused (campaign id, tenant id). Claims after this commits take none of
    their jobs; dials already claimed are placed, and live calls finish."""
    now = utcnow()
    figures = await abandonment_of(session, campaign_ids=campaign_ids, today=now.date())
    crossed = sorted(c for c, figure in figures.items() if figure.crossed)
    if not crossed:
        return []
    paused = await session.execute(
        update(Campaign)
        .where(Campaign.id.in_(crossed), Campaign.status == CampaignStatus.RUNNING)
        .values(
            status=CampaignStatus.PAUSED,
            paused_reason=PausedReason.ABANDONMENT_RATE,
            updated_at=now,
        )
        .returning(Campaign.id, Campaign.tenant_id)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.tenant_id) for row in paused]
