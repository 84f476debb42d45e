"""dial jobs never_received: how many dials of a job the carrier never took (withdrawn, not
failed), so the job's next wait grows with each (the dialer's Backoff).

Revision ID: b782cdbd70ca
Revises: 6752e8dfcc46
Create Date: 2026-11-30 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b782cdbd70ca"
down_revision: str | None = "6752e8dfcc46"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dial_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("never_received", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("dial_jobs", schema=None) as batch_op:
        batch_op.drop_column("never_received")
