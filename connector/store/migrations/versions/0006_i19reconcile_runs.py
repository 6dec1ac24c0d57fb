"""Reconcile runs and scheduled jobs.

- `reconcile_runs`: one row per comparison of a marketplace's delivered leads (its API's list) with the
  stored events: the window, how many were listed, missing and recovered, the gap in words, the state.
- `scheduled_jobs`: one row per job the worker runs on a schedule (reconcile per source, prune): when it
  is next due, and on SQLite the lease (owner, until) that lets one worker process at a time run it.

Revision ID: 0006_i19reconcile_runs
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_i19reconcile_runs"
down_revision = "0005_people_lookup"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("window_from", sa.Float, nullable=False),
        sa.Column("window_to", sa.Float, nullable=False),
        sa.Column("listed", sa.Integer, nullable=False),
        sa.Column("missing", sa.Integer, nullable=False),
        sa.Column("recovered", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("summary", sa.Text),
        sa.Column("missing_ids", sa.Text),
    )
    op.create_index("ix_reconcile_runs_source", "reconcile_runs", ["source", "started_at"])
    op.create_table(
        "scheduled_jobs",
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("next_run_at", sa.Float, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_started_at", sa.Float),
        sa.Column("last_finished_at", sa.Float),
        sa.Column("last_state", sa.String(20)),
        sa.Column("last_summary", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduled_jobs")
    op.drop_index("ix_reconcile_runs_source", table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
