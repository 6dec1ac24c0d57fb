"""Speed to lead: when each delivery was written to the CRM, and how long after the marketplace's delivery.

- `deliveries.written_at`: when the CRM took the delivery (the worker's clock, as the CRM answered).
- `deliveries.speed_to_lead`: seconds from the marketplace's delivery of the lead (the lead's
  `delivered_at`, else the event time) to that write; only for a lead's first delivery to a
  destination (the one that puts it in the CRM), so updates days later do not count.
- `ix_deliveries_written`: the console's and `explain`'s reads of the last 24 hours.

Revision ID: 0007_i18notify_speed_to_lead
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_i18notify_speed_to_lead"
down_revision = "0006_i19reconcile_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("written_at", sa.Float))
        batch.add_column(sa.Column("speed_to_lead", sa.Float))
    op.create_index("ix_deliveries_written", "deliveries", ["written_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_written", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("speed_to_lead")
        batch.drop_column("written_at")
