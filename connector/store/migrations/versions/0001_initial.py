"""The first schema: events, deliveries, lead state, pauses, backfill checkpoints.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_key", sa.String(400), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("lead_id", sa.String(200)),
        sa.Column("occurred_at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("deliverable", sa.Boolean, nullable=False),
        sa.Column("signature_index", sa.Integer),
        sa.Column("lead_json", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.UniqueConstraint("source", "event_key", name="uq_events_source_key"),
        sa.UniqueConstraint("source", "body_sha256", name="uq_events_source_body"),
    )
    op.create_index("ix_events_source_lead", "events", ["source", "lead_id"])
    op.create_index("ix_events_received", "events", ["received_at"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", Id, sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("lead_key", sa.String(400), nullable=False),
        sa.Column("occurred_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", sa.Float),
        sa.Column("first_failed_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_code", sa.String(100)),
        sa.Column("crm_id", sa.String(200)),
        sa.Column("force", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("event_id", "destination", name="uq_deliveries_event_destination"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["destination", "state", "next_attempt_at"])
    op.create_index("ix_deliveries_lead", "deliveries", ["destination", "lead_key", "state"])
    op.create_table(
        "lead_state",
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("lead_key", sa.String(400), primary_key=True),
        sa.Column("last_occurred_at", sa.Float, nullable=False),
        sa.Column("last_event_id", Id),
        sa.Column("crm_id", sa.String(200)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "destination_pauses",
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "backfill_checkpoints",
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("job_key", sa.String(200), primary_key=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("backfill_checkpoints", "destination_pauses", "lead_state", "deliveries", "events"):
        op.drop_table(table)
