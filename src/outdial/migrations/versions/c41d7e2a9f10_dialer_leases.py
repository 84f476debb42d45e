"""dialer leases: one lease row per dialer process instead of a lease time on each job;
an index for the heartbeat's look for requested hang-ups; the dial queue vacuumed eagerly.

Renewing every active job's lease each heartbeat wrote thousands of rows under load and
deadlocked against the writes that settle those same jobs; a dialer now renews one row.

Revision ID: c41d7e2a9f10
Revises: 948dc9b729e4
Create Date: 2026-11-23 20:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import outdial.db

revision: str = "c41d7e2a9f10"
down_revision: str | None = "948dc9b729e4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dialer_leases",
        sa.Column("dialer_id", sa.String(length=64), nullable=False),
        sa.Column("lease_expires_at", outdial.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dialer_id", name=op.f("pk_dialer_leases")),
    )
    op.create_index(
        op.f("ix_dialer_leases_lease_expires_at"), "dialer_leases", ["lease_expires_at"]
    )
    # Jobs active at upgrade time name dialers without a lease row: the first dialer to
    # reconcile takes them over and asks the provider what became of their calls.
    with op.batch_alter_table("dial_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_dial_jobs_status_lease")
        batch_op.drop_column("lease_expires_at")
        batch_op.create_index("ix_dial_jobs_status_owner", ["status", "lease_owner"])
    if op.get_bind().dialect.name == "postgresql":
        # The dial queue's rows change state several times each within minutes: vacuum
        # (and re-analyze) it after 2% has changed, not the default 20%, without throttling,
        # so claims do not wade through dead index entries and plan on stale statistics.
        op.execute(
            "ALTER TABLE dial_jobs SET (autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0)"
        )
    op.create_index(
        "ix_participants_hangup_requested",
        "participants",
        ["hangup_requested_at"],
        postgresql_where=sa.text("hangup_requested_at IS NOT NULL"),
        sqlite_where=sa.text("hangup_requested_at IS NOT NULL"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE dial_jobs RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay)"
        )
    op.drop_index("ix_participants_hangup_requested", table_name="participants")
    with op.batch_alter_table("dial_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_dial_jobs_status_owner")
        batch_op.add_column(sa.Column("lease_expires_at", outdial.db.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_dial_jobs_status_lease", ["status", "lease_expires_at"])
    op.drop_index(op.f("ix_dialer_leases_lease_expires_at"), table_name="dialer_leases")
    op.drop_table("dialer_leases")
