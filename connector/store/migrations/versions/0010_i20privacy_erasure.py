"""Privacy: events whose personal data was erased, and tombstones of people who asked to be forgotten.

- `events.erased_at`, `events.erased_why`: when and why (forget, retention, opted_out, forgotten) an
  event's body and lead were replaced by markers; such an event is kept for dedupe, ordering and
  `explain`, and cannot be replayed.
- `forgotten`: one row per `connector forget`: the person's keyed hashes (store/people.py), when,
  the operator's reason and how many rows were erased where; no personal data.

Revision ID: 0010_i20privacy_erasure
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_i20privacy_erasure"
down_revision = "0009_i19budget_rate_budgets"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("erased_at", sa.Float))
        batch.add_column(sa.Column("erased_why", sa.String(40)))
    op.create_table(
        "forgotten",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("email_hash", sa.String(64)),
        sa.Column("phone_hash", sa.String(64)),
        sa.Column("erased_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("erased", sa.Text, nullable=False),
    )
    op.create_index("ix_forgotten_email_hash", "forgotten", ["email_hash"])
    op.create_index("ix_forgotten_phone_hash", "forgotten", ["phone_hash"])


def downgrade() -> None:
    op.drop_index("ix_forgotten_phone_hash", "forgotten")
    op.drop_index("ix_forgotten_email_hash", "forgotten")
    op.drop_table("forgotten")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("erased_why")
        batch.drop_column("erased_at")
