"""dial attempts answered_by: who picked up (human or machine), so a call a machine
answered ends as voicemail whichever callback reports its end.

Revision ID: 9b63887e0dfc
Revises: 0e678e207b8d
Create Date: 2026-11-23 20:30:23.070733
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b63887e0dfc"
down_revision: str | None = "0e678e207b8d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dial_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answered_by", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dial_attempts", schema=None) as batch_op:
        batch_op.drop_column("answered_by")
