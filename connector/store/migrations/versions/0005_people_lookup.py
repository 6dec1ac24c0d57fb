"""People lookup: keyed hashes of each event's email and phone, and the salt that keys them.

- `events.email_hash`, `events.phone_hash` (indexed): HMAC-SHA256 of the normalised email and
  phone (connector/store/people.py), so a lead can be found by either without reading bodies,
  and found still once the body is encrypted or its personal data erased.
- `store_meta`: the salt, made here once per database; existing events are hashed with it.

Revision ID: 0005_people_lookup
"""

import json

import sqlalchemy as sa
from alembic import op

from connector.store.people import SALT_KEY, PersonHasher, new_salt

revision = "0005_people_lookup"
down_revision = "0004_i18b_alert_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "store_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    salt = new_salt()
    op.bulk_insert(meta, [{"key": SALT_KEY, "value": salt}])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("email_hash", sa.String(64)))
        batch.add_column(sa.Column("phone_hash", sa.String(64)))
    op.create_index("ix_events_email_hash", "events", ["email_hash"])
    op.create_index("ix_events_phone_hash", "events", ["phone_hash"])

    hasher, conn = PersonHasher(salt), op.get_bind()
    events = sa.table("events", sa.column("id"), sa.column("lead_json"), sa.column("email_hash"),
                      sa.column("phone_hash"))
    last = 0
    while True:  # in pages, so a large table does not sit in memory
        rows = conn.execute(sa.select(events.c.id, events.c.lead_json).where(events.c.id > last)
                            .order_by(events.c.id).limit(1000)).all()
        if not rows:
            break
        for row in rows:
            try:
                lead = json.loads(row.lead_json)
            except ValueError:
                continue
            email, phone = hasher.of_lead(lead if isinstance(lead, dict) else {})
            if email or phone:
                conn.execute(events.update().where(events.c.id == row.id).values(email_hash=email, phone_hash=phone))
        last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_events_phone_hash", "events")
    op.drop_index("ix_events_email_hash", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("phone_hash")
        batch.drop_column("email_hash")
    op.drop_table("store_meta")
