"""Console logins: wrong passwords counted per client and in all, and the lockouts they led to.

Kept in the database (not in a process) so a lockout holds across gunicorn's workers and restarts.

Revision ID: 0008_i18console_logins
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_i18console_logins"
down_revision = "0007_i18notify_speed_to_lead"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_logins",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", sa.Float, nullable=False),
        sa.Column("locked_until", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_logins")
