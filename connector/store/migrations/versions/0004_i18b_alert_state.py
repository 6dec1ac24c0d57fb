"""Alert state: the last state each alert was sent for, so an alert goes out once per change of state.

- `alert_state`: one row per alert key (`destination:NAME`, `pending:NAME`, `deadletters`), holding the
  state last alerted (`ok`, `failing`, `late`, or for dead letters the end of the last interval counted)
  and when. Workers change a row only from the state they read (compare and set), so however many
  worker processes evaluate the alerts, one of them sends each change.

Revision ID: 0004_i18b_alert_state
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_i18b_alert_state"
down_revision = "0003_i18_attempt_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_state",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
