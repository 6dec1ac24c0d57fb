"""Retention and encryption at rest, on both databases: personal data goes when its keep is over (never
while a lead waits), dedupe and explain keep working, replay refuses, keys rotate, an unknown key is named."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.fernet import Fernet

from connector.cli import main
from connector.privacy.retention import apply_retention
from connector.runtime import load_runtime
from connector.store.schema import deliveries, events
from connector.worker import Worker
from connector.worker.jobs import scheduled_jobs
from tests.conftest import ENV, cli_for, leaditio_payload
from tests.privacy_helpers import OTHER_EMAIL, dump, person_in, privacy_config
from tests.test_privacy_forget import person_payload, post

DAY = 86400.0


@pytest.mark.slow
def test_retention_erases_delivered_leads_after_their_keep_and_dead_letters_after_theirs(tmp_path,
                                                                                         database_url) -> None:
    path = privacy_config(tmp_path, database_url, {"keep_personal_data": "30d", "keep_dead_letters": "90d"})
    cli = cli_for(path)
    cli("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    store = runtime.store
    post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z"))
    post(runtime, person_payload("lead_D", "2026-05-20T10:00:00Z", phone="0829990000", email="dead@example.com",
                                notes_phone="082 999 0000"))
    Worker(runtime).drain(timeout=20)
    with store.engine.begin() as conn:  # lead_D became a dead letter
        dead_id = conn.execute(sa.select(deliveries.c.id).join(events, events.c.id == deliveries.c.event_id)
                               .where(events.c.lead_id == "lead_D")).scalar()
        conn.execute(deliveries.update().where(deliveries.c.id == dead_id)
                     .values(state="dead", last_error="refused: dead@example.com", last_error_code="x"))
    waiting = leaditio_payload("lead_W")
    waiting["contact"] = {"phone": "+27715550000", "email": OTHER_EMAIL}
    post(runtime, waiting)  # pending: never erased, however old

    now = time.time()
    assert apply_retention(runtime, now + 29 * DAY).events == 0
    dry = apply_retention(runtime, now + 31 * DAY, dry_run=True)
    assert dry.events == 1 and person_in(dump(store))
    report = apply_retention(runtime, now + 31 * DAY)
    assert report.events == 1 and report.places["events (raw bodies)"] == 1
    text = dump(store)
    assert person_in(text) == []  # lead_A's email and number in every spelling
    assert "dead@example.com" in text and OTHER_EMAIL in text  # the dead letter keeps longer; pending stays

    report = apply_retention(runtime, now + 91 * DAY)
    assert report.events == 1 and report.places["dead letters"] == 1
    text = dump(store)
    assert "dead@example.com" not in text and "0829990000" not in text and OTHER_EMAIL in text

    # what remains still works: dedupe, explain; replay and retry refuse
    assert post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z"))["status"] == "duplicate"
    assert json.loads(cli("explain", "lead_A", "--json"))["events"][0]["deliveries"][0]["state"] == "delivered"
    assert "cannot replay" in cli("replay", "--lead", "lead_A", code=1)
    assert "cannot be sent again" in cli("deadletters", "retry", str(dead_id))
    assert "retention: personal data of 0 events" in cli("db", "prune")


def test_retention_is_a_daily_job_on_the_workers_scheduler(tmp_path, database_url) -> None:
    """Which one process runs it is the scheduler's promise (tests/test_schedule.py); here: it is there,
    daily, and a run is what `status` reports."""
    path = privacy_config(tmp_path, database_url, {})
    cli_for(path)("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    assert runtime.store.status()["privacy"]["last_retention"] is None
    job = {job.name: job for job in scheduled_jobs(runtime)}["retention"]
    assert job.every == DAY
    assert job.run() == "personal data of 0 events replaced by markers"
    last = runtime.store.status()["privacy"]["last_retention"]
    assert last is not None and abs(last - time.time()) < 60


@pytest.mark.slow
def test_keys_rotate_and_an_unknown_key_is_named(tmp_path, database_url, monkeypatch) -> None:
    old, new, stranger = (Fernet.generate_key().decode() for _ in range(3))
    path = privacy_config(tmp_path, database_url, {"encryption_keys": ["${KEY_A}", "${KEY_B:-}"]})
    monkeypatch.setitem(ENV, "KEY_A", old)
    cli_for(path)("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z"))
    assert person_in(dump(runtime.store)) == [] and person_in(dump(runtime.store, [old]))

    monkeypatch.setitem(ENV, "KEY_A", new)  # the new key first, the old one still there to decrypt
    monkeypatch.setitem(ENV, "KEY_B", old)
    assert "1 events encrypted" in cli_for(path)("db", "rotate-key")
    monkeypatch.setitem(ENV, "KEY_B", "")
    runtime = load_runtime(path, env=ENV)  # the new key alone reads everything
    Worker(runtime).drain(timeout=20)
    assert "lead_A" in (tmp_path / "leads.jsonl").read_text()
    assert person_in(dump(runtime.store, [new]))

    monkeypatch.setitem(ENV, "KEY_A", stranger)
    result = CliRunner(env={**ENV, "COLUMNS": "250"}).invoke(main, ["--config", str(path), "explain", "lead_A"])
    assert result.exit_code == 1 and "privacy.encryption_keys" in result.output, result.output

    monkeypatch.setitem(ENV, "KEY_A", "not-a-key")
    result = CliRunner(env=ENV).invoke(main, ["--config", str(path), "status"])
    assert result.exit_code != 0 and "KEY_A" in result.output and "not-a-key" not in result.output


def test_an_erased_lead_is_unknown_to_backfill(tmp_path, database_url) -> None:
    """Backfill queues new destinations from the stored copy: an erased copy must not be that copy."""
    path = privacy_config(tmp_path, database_url, {}, routes=[])
    cli_for(path)("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z"))
    assert list(runtime.store.known_leads("leaditio", ["lead_A"])) == ["lead_A"]
    assert apply_retention(runtime, time.time() + 31 * DAY).events == 1
    assert runtime.store.known_leads("leaditio", ["lead_A"]) == {}
