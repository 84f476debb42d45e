"""launch check, abandonment, open WebRTC participants: why a paused campaign is paused
(campaigns.paused_reason), a campaign's person-answered and abandoned calls per UTC day
(campaign_answer_days), whether a call's provider sees its WebRTC participants
(calls.webrtc_seen), and an index of the WebRTC participants not yet ended (where it does not,
they end with their call, and idle all-WebRTC calls are swept).

Revision ID: 5d1f0c7a9e42
Revises: 5f3a9c1d7e20
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1f0c7a9e42"
down_revision: str | None = "5f3a9c1d7e20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_WEBRTC = "transport = 'webrtc' AND ended_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_reason", sa.String(length=32), nullable=True))
    op.create_table(
        "campaign_answer_days",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "day", name=op.f("pk_campaign_answer_days")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("webrtc_seen", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_index(
        "ix_participants_open_webrtc",
        "participants",
        ["call_id"],
        postgresql_where=sa.text(OPEN_WEBRTC),
        sqlite_where=sa.text(OPEN_WEBRTC),
    )


def downgrade() -> None:
    op.drop_index("ix_participants_open_webrtc", table_name="participants")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("webrtc_seen")
    op.drop_table("campaign_answer_days")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("paused_reason")
