"""compliance: calls' state rules (`state_rules`, `max_attempts_per_24h`), each dial attempt's
`checks` (the audit of why it was allowed), and the index the frequency cap reads (a tenant's
dials of a number by time).

Revision ID: 5f3a9c1d7e20
Revises: 5f3a9c1e7b20
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5f3a9c1d7e20"
down_revision: str | None = "5f3a9c1e7b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state_rules", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("max_attempts_per_24h", sa.Integer(), nullable=True))
    with op.batch_alter_table("dial_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "checks",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.create_index(
            "ix_dial_attempts_tenant_number_dial_at",
            ["tenant_id", "to_number", "dial_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("dial_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_dial_attempts_tenant_number_dial_at")
        batch_op.drop_column("checks")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("max_attempts_per_24h")
        batch_op.drop_column("state_rules")
