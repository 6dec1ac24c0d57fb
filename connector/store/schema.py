"""Tables: where a lead waits between the webhook and the CRM.

- `events`: every accepted webhook (raw body kept) or backfilled lead; also the dedupe ledger.
- `deliveries`: one row per (event, destination), with its state, attempts, lease and last error, and
  when it reached the CRM (with the speed to lead of a lead's first delivery).
- `lead_state`: per (destination, lead) what was last applied: stale-update protection and the CRM id.
- `destination_pauses`: destinations waiting on a config fix, a login, a daily quota or an outage.
- `destination_health`: per destination, since when its deliveries keep failing transiently, and why.
- `delivery_attempts`: per delivery, its last verdicts (when, worker, outcome, request summary), for `explain`.
- `backfill_checkpoints`: where each backfill got to, written with the events of its page.
- `store_meta`: values the database makes for itself once, such as the salt of the people lookup hashes.
- `alert_state`: the state each alert was last sent for (connector.alerts).
- `reconcile_runs`: each comparison of a marketplace's delivered leads with the stored events.
- `scheduled_jobs`: per job the worker runs on a schedule, when it is next due and who runs it now.
- `console_logins`: wrong console passwords per client and in all, and lockouts (store/logins.py).
- `rate_budgets`: per API key (hashed), the requests it may still send, shared by every process.
- `forgotten`: tombstones of people erased by `connector forget`: their keyed hashes, when, why; no personal data.

Changes go through a new Alembic revision in `migrations/versions/`.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()
Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

PENDING, DELIVERED, DEAD, SKIPPED, STALE = "pending", "delivered", "dead", "skipped", "stale"
STATES = (PENDING, DELIVERED, DEAD, SKIPPED, STALE)

events = Table(
    "events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("event_key", String(400), nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("event_type", Text, nullable=False),  # kept whole: PostgreSQL refused long ones (0002)
    Column("lead_id", String(200)),
    Column("occurred_at", Float, nullable=False),  # the marketplace's time, at most the tolerance ahead of receipt
    Column("stated_occurred_at", Float),  # the marketplace's time when it was further ahead, and so replaced
    Column("received_at", Float, nullable=False),
    Column("origin", String(20), nullable=False),
    Column("deliverable", Boolean, nullable=False),
    Column("signature_index", Integer),
    Column("lead_json", Text, nullable=False),
    Column("body", LargeBinary),
    Column("email_hash", String(64)),  # keyed hashes of the person (store/people.py): lookup without the value
    Column("phone_hash", String(64)),
    # Set when the event's personal data was replaced by markers (forget, retention, opt-out): it cannot be replayed.
    Column("erased_at", Float),
    Column("erased_why", String(40)),
    UniqueConstraint("source", "event_key", name="uq_events_source_key"),
    UniqueConstraint("source", "body_sha256", name="uq_events_source_body"),
    Index("ix_events_source_lead", "source", "lead_id"),
    Index("ix_events_received", "received_at"),
    Index("ix_events_email_hash", "email_hash"),
    Index("ix_events_phone_hash", "phone_hash"),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", Id, ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("destination", String(100), nullable=False),
    Column("lead_key", String(400), nullable=False),
    Column("occurred_at", Float, nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # Times a worker leased it: once claimed, the CRM may hold its data even if no answer came back.
    Column("claims", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(100)),
    Column("lease_until", Float),
    Column("first_failed_at", Float),
    Column("last_error", Text),
    Column("last_error_code", String(100)),
    Column("crm_id", Text),
    Column("force", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("written_at", Float),  # when the CRM took it (0005)
    # seconds from the marketplace's delivery of the lead to that write; a lead's first delivery only (0005)
    Column("speed_to_lead", Float),
    UniqueConstraint("event_id", "destination", name="uq_deliveries_event_destination"),
    # Only pending rows, in claim order: a claim reads them without sorting, and the planner (even
    # with no statistics) never prefers it for a lookup by lead, which ix_deliveries_lead serves.
    Index("ix_deliveries_due", "destination", "next_attempt_at", "id",
          postgresql_where=text("state = 'pending'"), sqlite_where=text("state = 'pending'")),
    Index("ix_deliveries_lead", "destination", "lead_key", "state"),
    Index("ix_deliveries_written", "written_at"),
)

lead_state = Table(
    "lead_state", metadata,
    Column("destination", String(100), primary_key=True),
    Column("lead_key", String(400), primary_key=True),
    Column("last_occurred_at", Float, nullable=False),
    Column("last_event_id", Id),
    Column("crm_id", Text),
    Column("updated_at", Float, nullable=False),
)

destination_pauses = Table(
    "destination_pauses", metadata,
    Column("destination", String(100), primary_key=True),
    Column("until", Float, nullable=False),
    Column("kind", String(20), nullable=False),  # "config" or "rate_limit"
    Column("reason", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

destination_health = Table(
    "destination_health", metadata,
    Column("destination", String(100), primary_key=True),
    Column("failing_since", Float, nullable=False),
    Column("failures", Integer, nullable=False),  # consecutive transient failures, reset by any success
    Column("last_error", Text, nullable=False),  # redacted: no phone, email or secret
    Column("next_try", Float),
    Column("updated_at", Float, nullable=False),
)

ATTEMPTS_KEPT = 20  # per delivery: the newest verdicts; older ones are deleted as new ones come

delivery_attempts = Table(
    "delivery_attempts", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("owner", String(200), nullable=False),  # the worker that settled it
    Column("state", String(20), nullable=False),  # the state the verdict left the delivery in
    Column("next_attempt_at", Float),  # a retry: when
    Column("error_code", String(100)),
    Column("error", Text),  # redacted by the worker, like deliveries.last_error
    Column("crm_id", Text),
    Column("summary", Text),  # JSON: batch size, field names and policy decisions; never values
    Index("ix_delivery_attempts_delivery", "delivery_id", "id"),
)

backfill_checkpoints = Table(
    "backfill_checkpoints", metadata,
    Column("source", String(100), primary_key=True),
    Column("job_key", String(200), primary_key=True),
    Column("params", Text, nullable=False),
    Column("state", Text, nullable=False),  # JSON: page, total, counts, ... (the backfill owns its shape)
    Column("done", Boolean, nullable=False, default=False),
    Column("updated_at", Float, nullable=False),
)

alert_state = Table(
    "alert_state", metadata,
    Column("key", String(200), primary_key=True),  # destination:NAME, pending:NAME, deadletters
    Column("state", String(100), nullable=False),  # the state last alerted (connector.alerts)
    Column("updated_at", Float, nullable=False),
)

store_meta = Table(
    "store_meta", metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

reconcile_runs = Table(
    "reconcile_runs", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("trigger", String(20), nullable=False),  # "command" (connector reconcile) or "schedule" (the worker)
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),  # None while running (or if its process died)
    Column("window_from", Float, nullable=False),  # leads delivered in [window_from, window_to] were compared
    Column("window_to", Float, nullable=False),
    Column("listed", Integer, nullable=False, default=0),  # leads the marketplace lists in the window
    Column("missing", Integer, nullable=False, default=0),  # of those, never received by webhook
    Column("recovered", Integer, nullable=False, default=0),  # of those, fetched and queued by this run
    Column("state", String(20), nullable=False),  # running, ok, failed
    Column("error", Text),  # redacted
    Column("summary", Text),  # the gap in words ("3 leads delivered on 2026-05-20 never reached us ...")
    Column("missing_ids", Text),  # JSON: the first lead ids found missing (ids only, no personal data)
    Index("ix_reconcile_runs_source", "source", "started_at"),
)

scheduled_jobs = Table(
    "scheduled_jobs", metadata,
    Column("job", String(200), primary_key=True),  # e.g. reconcile:leaditio, prune
    Column("next_run_at", Float, nullable=False),
    Column("owner", String(200)),  # the worker running it now
    Column("lease_until", Float),  # SQLite: the run is the owner's until then (renewed while it runs)
    Column("last_started_at", Float),
    Column("last_finished_at", Float),
    Column("last_state", String(20)),  # ok or failed
    Column("last_summary", Text),
    Column("updated_at", Float, nullable=False),
)

console_logins = Table(
    "console_logins", metadata,
    Column("key", String(200), primary_key=True),  # "client:<address>" or "all": what a lockout counts
    Column("failures", Integer, nullable=False),  # wrong passwords since window_start
    Column("window_start", Float, nullable=False),
    Column("locked_until", Float),  # logins refused until then (not even compared)
    Column("updated_at", Float, nullable=False),
)

rate_budgets = Table(
    "rate_budgets", metadata,
    # sha256 of remote, server and API key (connector.pacing.key_digest): never the key itself
    Column("key", String(64), primary_key=True),
    Column("label", String(100), nullable=False),  # the remote ("hubspot", "leaditio"), for `status`
    Column("version", Integer, nullable=False),  # compare and set: a change applies only to the version read
    Column("state", Text, nullable=False),  # JSON: windows, grants, foreign use, hold (connector.pacing)
    Column("updated_at", Float, nullable=False),
)

forgotten = Table(
    "forgotten", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email_hash", String(64)),  # keyed as events.email_hash (store/people.py)
    Column("phone_hash", String(64)),
    Column("erased_at", Float, nullable=False),
    Column("reason", Text, nullable=False),  # the operator's words, redacted
    Column("erased", Text, nullable=False),  # JSON: per place, how many rows were erased
    Index("ix_forgotten_email_hash", "email_hash"),
    Index("ix_forgotten_phone_hash", "phone_hash"),
)
