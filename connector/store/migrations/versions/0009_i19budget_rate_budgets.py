"""Rate budgets shared by every process: one row per API key (hashed), changed by compare and set.

- `rate_budgets`: `key` is a SHA-256 of the remote, the server and the API key (never the key);
  `state` is the JSON connector.pacing keeps (grants per window, foreign use, a 429's hold);
  `version` makes each change apply only to the state it was decided on.

Revision ID: 0009_i19budget_rate_budgets
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_i19budget_rate_budgets"
down_revision = "0008_i18console_logins"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_budgets",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_budgets")
