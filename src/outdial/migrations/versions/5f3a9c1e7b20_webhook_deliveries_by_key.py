"""webhook deliveries by ordering key: a call's timeline lists the deliveries of its events
(the key of a call's events is its id) without reading an endpoint's whole log.

Revision ID: 5f3a9c1e7b20
Revises: b782cdbd70ca
Create Date: 2026-11-30 21:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5f3a9c1e7b20"
down_revision: str | None = "b782cdbd70ca"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_key", "webhook_deliveries", ["ordering_key", "seq"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_key", table_name="webhook_deliveries")
