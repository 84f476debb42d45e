"""agent streams: an agent's stream_url and the stream_secret that signs its upgrade request
(existing agents get a fresh secret each); end reasons widened to 32 characters for
`agent_unavailable` (17), which PostgreSQL's VARCHAR(16) would refuse. SQLite does not enforce
VARCHAR lengths, so its tables are left as they are.

Revision ID: 79d253a25d0c
Revises: 0e53d80c6eb7
Create Date: 2026-11-24 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outdial.signing import new_secret

revision: str = "79d253a25d0c"
down_revision: str | None = "0e53d80c6eb7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

END_REASON_TABLES = ("participants", "dial_attempts", "campaign_contacts")


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("stream_secret", sa.String(length=64), nullable=True))
    agents = sa.table("agents", sa.column("id", sa.String), sa.column("stream_secret", sa.String))
    connection = op.get_bind()
    for (agent_id,) in connection.execute(sa.select(agents.c.id)).all():
        connection.execute(
            agents.update().where(agents.c.id == agent_id).values(stream_secret=new_secret())
        )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.alter_column("stream_secret", existing_type=sa.String(length=64), nullable=False)
    if connection.dialect.name == "postgresql":
        for table in END_REASON_TABLES:
            op.alter_column(
                table, "end_reason", type_=sa.String(length=32), existing_type=sa.String(16)
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in END_REASON_TABLES:
            op.alter_column(
                table, "end_reason", type_=sa.String(length=16), existing_type=sa.String(32)
            )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("stream_secret")
        batch_op.drop_column("stream_url")
