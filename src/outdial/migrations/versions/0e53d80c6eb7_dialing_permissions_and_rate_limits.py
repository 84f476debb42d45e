"""dialing permissions on tenants, fixed variables on publishable keys, rate-limit counters.

Issue 10, defects 6 and 7: a tenant's permitted destination countries and whether premium-rate
numbers and the documented high-risk ranges may be dialed; the variables a publishable key's
calls carry, which its requests may not override; and the sliding-window counters that rate
limits share across API processes (UNLOGGED on PostgreSQL: no WAL, lost on a crash, which
only forgives a few seconds of counts).

Revision ID: 0e53d80c6eb7
Revises: c41d7e2a9f10
Create Date: 2026-11-24 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import outdial.db

revision: str = "0e53d80c6eb7"
down_revision: str | None = "c41d7e2a9f10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dialing_countries", JSON, nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column(
                "dialing_caller_id_countries",
                sa.Boolean(),
                nullable=False,
                server_default=sa.true(),
            )
        )
        batch_op.add_column(
            sa.Column(
                "dialing_allow_premium_rate",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch_op.add_column(
            sa.Column(
                "dialing_allow_high_risk", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", JSON, nullable=True))
    op.create_table(
        "rate_limit_counters",
        sa.Column("bucket", sa.String(length=100), nullable=False),
        sa.Column("window_index", outdial.db.BigInt, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("previous_hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", outdial.db.BigInt, nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_rate_limit_counters")),
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )
    op.create_index(
        op.f("ix_rate_limit_counters_expires_at"), "rate_limit_counters", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_limit_counters_expires_at"), table_name="rate_limit_counters")
    op.drop_table("rate_limit_counters")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("variables")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("dialing_allow_high_risk")
        batch_op.drop_column("dialing_allow_premium_rate")
        batch_op.drop_column("dialing_caller_id_countries")
        batch_op.drop_column("dialing_countries")
