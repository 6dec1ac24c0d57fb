"""Attempt history: one row per verdict on a delivery, for `connector explain`.

- `delivery_attempts`: when, which worker, the state it left the delivery in, the retry time, the
  error code and (redacted) message, the CRM's record id, and a short summary of the request (batch
  size, mapped field names with each field's update-policy decision; names, never values). Written
  in the transaction that settles the delivery, at most `ATTEMPTS_KEPT` per delivery, and deleted
  with its delivery (and so with its event, by `prune`).

Revision ID: 0003_i18_attempt_history
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_i18_attempt_history"
down_revision = "0002_i14_newest_wins"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", Id, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("error_code", sa.String(100)),
        sa.Column("error", sa.Text),
        sa.Column("crm_id", sa.Text),
        sa.Column("summary", sa.Text),
    )
    op.create_index("ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id", "id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
