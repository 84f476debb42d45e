"""webhook endpoints, the delivery outbox and its attempt log

Revision ID: 6752e8dfcc46
Revises: cb0684729d89
Create Date: 2026-11-30 17:47:58.907263
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import outdial.db

revision: str = "6752e8dfcc46"
down_revision: str | None = "cb0684729d89"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNFINISHED = sa.text("finished_at IS NULL")
FINISHED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column(
            "events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("disabled_reason", sa.String(length=16), nullable=True),
        sa.Column("failing_since", outdial.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", outdial.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outdial.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_endpoints_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        "ix_webhook_endpoints_tenant_status", "webhook_endpoints", ["tenant_id", "status"]
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", BIGINT, autoincrement=True, nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("ordering_key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holds_order", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", outdial.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", outdial.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", outdial.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_webhook_deliveries")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at", "seq"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["endpoint_id", "ordering_key", "seq"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "seq"])
    op.create_index(
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )
    if op.get_bind().dialect.name == "postgresql":
        # Each delivery row is written three times within a second (queued, leased, done):
        # vacuum it eagerly, as the dial queue is.
        op.execute(
            "ALTER TABLE webhook_deliveries SET (autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0)"
        )

    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_seq", BIGINT, nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("started_at", outdial.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("response", sa.String(length=500), nullable=True),
        sa.Column("next_attempt_at", outdial.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("delivery_seq", "attempt_no", name=op.f("pk_webhook_attempts")),
    )
    op.create_index("ix_webhook_attempts_started_at", "webhook_attempts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_started_at", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_finished", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_order", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_tenant_status", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
