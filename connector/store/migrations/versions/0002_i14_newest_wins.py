"""Newest wins and outages: claim counts, clamped event times, destination health, whole ids on PostgreSQL.

- `deliveries.claims`: a delivery once leased may already be in the CRM, so older events of its
  lead must not be sent after it (newest wins even when an answer was lost).
- `events.stated_occurred_at`: the marketplace's own time when it lay too far in the future and
  the receipt time was used instead.
- `destination_health`: since when a destination's deliveries keep failing, for status and metrics.
- `ix_deliveries_due` covers pending rows only, as (destination, next_attempt_at, id): a claim reads
  due rows in index order without sorting them, and a planner with no statistics no longer picks
  it to look up a lead's rows (measured: it scanned every pending row for that).
- PostgreSQL only (SQLite ignores lengths): event types and CRM ids are TEXT, so what SQLite
  stores PostgreSQL stores.

Revision ID: 0002_i14_newest_wins
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_i14_newest_wins"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claims", sa.Integer, nullable=False, server_default="0"))
    # Deliveries tried before this revision may be in the CRM already: count them as claimed once.
    op.execute("UPDATE deliveries SET claims = 1 WHERE attempts > 0 OR lease_owner IS NOT NULL")
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("stated_occurred_at", sa.Float))
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    pending = sa.text("state = 'pending'")
    op.create_index("ix_deliveries_due", "deliveries", ["destination", "next_attempt_at", "id"],
                    postgresql_where=pending, sqlite_where=pending)
    op.create_table(
        "destination_health",
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("failing_since", sa.Float, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("next_try", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("events", "event_type", type_=sa.Text)
        op.alter_column("deliveries", "crm_id", type_=sa.Text)
        op.alter_column("lead_state", "crm_id", type_=sa.Text)


def downgrade() -> None:
    op.drop_table("destination_health")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["destination", "state", "next_attempt_at"])
    with op.batch_alter_table("events") as batch:
        batch.drop_column("stated_occurred_at")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claims")
