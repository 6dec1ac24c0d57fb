"""The seven cases of issue 14 as regression tests, on both databases, over real HTTP.

1. stale data won after a lost answer, or while the newer delivery was in flight;
2. one lead stopped a destination;
3. a second update in the same second, or a long id, was dropped as a duplicate;
4. a far-future timestamp froze a lead;
5. PostgreSQL refused (503) what SQLite took;
6. the claim's cost grew with the queue on a fresh database (see also bench/claim.py);
7. an outage was invisible and hammered; a database outage printed tracebacks.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import requests
import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli import main
from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED, PENDING, STALE, deliveries, events
from connector.web import create_app
from connector.worker import OUTAGE, Worker
from fakes.server import serve
from tests.conftest import ENV, leaditio_payload, make_config, post_webhook, read_jsonl, write_config
from tests.test_worker import http_setup

LEAD = "leaditio:lead_abc123"


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- 1. newest wins ------------------------------------------------------------------------
def test_a_lost_answer_never_lets_an_older_event_win(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    worker = Worker(Runtime(config, store))
    with serve(create_app(Runtime(config, store))) as url:
        newer = post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=90))
        fake_crm.lose_next_answer()  # the CRM writes the update, its answer never arrives
        worker.run_once("crm")
        [row] = store.deliveries_query()
        assert row["state"] == PENDING and row["attempts"] == 1 and fake_crm.records[LEAD]["score"] == 90
        post_webhook(url, leaditio_payload(timestamp="2026-05-20T10:00:00Z", score=50))  # a late lead.new
    worker.drain(timeout=10)
    assert fake_crm.records[LEAD]["score"] == 90
    assert fake_crm.replays == 1  # the retry carried the same key: the CRM replayed its answer
    [stale] = store.deliveries_query(state=STALE)
    assert f"event {newer.json()['event_id']} of this lead is newer" in stale["last_error"]
    assert [r["state"] for r in store.deliveries_query(state=DELIVERED)] == [DELIVERED]


def test_an_older_event_is_not_sent_while_a_newer_one_is_in_flight(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    first, second = Worker(Runtime(config, store)), Worker(Runtime(config, store))
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=90))
        in_flight = first.take("crm")
        assert in_flight is not None and len(in_flight.items) == 1
        post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T10:30:00Z", score=40))
        post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:30:00Z", score=99))
    assert second.run_once("crm") == 1  # the older one is superseded; the newest waits for the one in flight
    assert fake_crm.requests == []
    first.deliver(in_flight)
    second.drain(timeout=10)
    assert fake_crm.records[LEAD]["score"] == 99 and fake_crm.creates[LEAD] == 1
    assert sorted(r["state"] for r in store.deliveries_query()) == [DELIVERED, DELIVERED, STALE]


def test_same_time_goes_to_the_later_received_event(receiver, config, store, tmp_path):
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=1))
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=2))
    Worker(Runtime(config, store)).drain(timeout=10)
    assert read_jsonl(tmp_path / "leads.jsonl")[LEAD]["score"] == 2


# --- 2. one lead never blocks another --------------------------------------------------------
def test_a_lead_a_transform_cannot_read_is_a_dead_letter_and_the_rest_go_through(receiver, config, store, tmp_path):
    post_webhook(receiver, leaditio_payload("lead_bad", delivered_at="9999-12-31T23:59:59-12:00"))
    for index in range(10):
        post_webhook(receiver, leaditio_payload(f"lead_{index}"))
    result = CliRunner(env=ENV).invoke(main, ["--config", str(config.path), "worker", "--drain", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "leads.jsonl")) == 10
    [dead] = store.deliveries_query(state=DEAD)
    assert dead["lead_key"] == "leaditio:lead_bad" and dead["last_error_code"] == "mapping_transform"
    assert "field received_on: transform 'date' failed" in dead["last_error"]


def test_a_batch_that_raises_is_split_until_the_lead_behind_it_stands_alone(tmp_path, database_url):
    config = make_config(tmp_path, database_url, worker={"retry_horizon": 0.5})
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        for index in range(5):
            post_webhook(url, leaditio_payload(f"lead_{index}"))
        post_webhook(url, leaditio_payload("lead_odd", first_name="\ud800"))  # the file cannot hold it (UTF-8)
        for index in range(5, 10):
            post_webhook(url, leaditio_payload(f"lead_{index}"))
    worker = Worker(Runtime(config, store))
    worker.run_once("leads_file")  # one batch of 11: halved until the odd lead is alone
    assert len(read_jsonl(tmp_path / "leads.jsonl")) == 10
    worker.drain(timeout=10)
    [dead] = store.deliveries_query(state=DEAD)
    assert dead["lead_key"] == "leaditio:lead_odd" and "UnicodeEncodeError" in dead["last_error"]


# --- 3. dedupe keeps real updates ----------------------------------------------------------
def test_two_updates_in_the_same_second_are_two_events(receiver, config, store, tmp_path):
    one = leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=60)
    two = leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=70)
    assert post_webhook(receiver, one).json()["status"] == "accepted"
    assert post_webhook(receiver, two).json()["status"] == "accepted"
    assert post_webhook(receiver, two).json()["status"] == "duplicate"
    Worker(Runtime(config, store)).drain(timeout=10)
    assert read_jsonl(tmp_path / "leads.jsonl")[LEAD]["score"] == 70


def test_long_ids_are_never_cut_into_one(receiver, config, store, tmp_path):
    shared = "x" * 390
    for tail in ("aaaaa", "bbbbb"):
        assert post_webhook(receiver, leaditio_payload(shared + tail)).json()["status"] == "accepted"
    Worker(Runtime(config, store)).drain(timeout=10)
    written = read_jsonl(tmp_path / "leads.jsonl")
    assert sorted(row["lead_id"][-5:] for row in written.values()) == ["aaaaa", "bbbbb"]
    assert all(len(key) <= 400 for key in written)


# --- 4. event time is bounded --------------------------------------------------------------
def test_a_far_future_time_counts_as_the_receipt_time(receiver, config, store, tmp_path):
    frozen = post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2099-01-01T00:00:00Z",
                                                     score=10)).json()
    Worker(Runtime(config, store)).drain(timeout=10)
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp=stamp(time.time() + 2), score=99))
    Worker(Runtime(config, store)).drain(timeout=10)
    assert read_jsonl(tmp_path / "leads.jsonl")[LEAD]["score"] == 99
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(events.c.occurred_at, events.c.stated_occurred_at, events.c.received_at)
                           .where(events.c.id == frozen["event_id"])).one()
    assert row.occurred_at == row.received_at and row.stated_occurred_at == 4070908800.0
    delivery = [r for r in store.deliveries_query() if r["event_id"] == frozen["event_id"]][0]
    shown = CliRunner(env={**ENV, "COLUMNS": "250"}).invoke(
        main, ["--config", str(config.path), "deadletters", "show", str(delivery["id"])])
    assert "2099-01-01T00:00:00Z" in shown.output and "receipt time used" in shown.output


# --- 5. same answers on both databases -------------------------------------------------------
def test_nul_characters_and_long_values_are_stored_on_both_databases(receiver, config, store):
    cases = [
        {**leaditio_payload("lead_\x00nul"), "event": "lead.\x00updated"},
        leaditio_payload("lead_ts", timestamp="2026-05-20T10:\x0023:44Z"),
        {**leaditio_payload("lead_type"), "event": "lead." + "t" * 150},
        leaditio_payload("L" * 300),
        leaditio_payload("M" * 5000),
    ]
    for payload in cases:
        answer = post_webhook(receiver, payload)
        assert answer.status_code == 200, answer.text
    assert requests.get(f"{receiver}/readyz", timeout=5).status_code == 200
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(events.c.event_type, events.c.lead_id)).all()
    assert ("lead.updated", "lead_nul") in stored and ("lead." + "t" * 150, "lead_type") in stored
    assert all(len(lead_id) <= 200 for _, lead_id in stored)


# --- 6. the claim reads a bounded number of rows ---------------------------------------------
def test_the_claim_reads_due_rows_in_index_order_without_statistics(config, store):
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [
            {"id": i + 1, "source": "leaditio", "event_key": f"k{i}", "body_sha256": f"b{i}", "event_type": "lead.new",
             "lead_id": str(i), "occurred_at": now, "received_at": now, "origin": "webhook", "deliverable": True,
             "lead_json": "{}"} for i in range(3000)])
        conn.execute(deliveries.insert(), [
            {"event_id": i + 1, "destination": f"d{i % 3}", "lead_key": f"leaditio:{i}", "occurred_at": now,
             "state": PENDING, "attempts": 0, "claims": 0, "next_attempt_at": now - i, "force": False,
             "created_at": now, "updated_at": now} for i in range(3000)])
    scan = str(store._claimer.scan)
    params = {"dest": "d1", "now": now, "after_at": -1e300, "after_id": 0, "n": 100}
    with store.engine.connect() as conn:
        if store.is_postgres:
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + scan), params))
            assert "ix_deliveries_due" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
        else:
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + scan), params))
            assert "ix_deliveries_due" in plan and "TEMP B-TREE" not in plan, plan
    assert len(store.claim("d1", 100, "me", 30).claimed) == 100


# --- 7. outages are visible and gentle ------------------------------------------------------
def test_an_outage_shows_in_status_and_the_crm_is_probed_one_lead_at_a_time(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url,
                               worker={"breaker_threshold": 3, "backoff_base": 1, "backoff_max": 2})
    with serve(create_app(Runtime(config, store))) as url:
        for index in range(12):
            post_webhook(url, leaditio_payload(f"lead_{index}"))
    fake_crm.fail_next(503, times=1000, body={"code": "unavailable", "message": "down for maintenance"})
    worker = Worker(Runtime(config, store))
    worker.run_once("crm")  # a batch: every lead fails
    before = len(fake_crm.requests)
    assert worker.run_once("crm") == 0  # paused (for at least 0.5 s): no call at all
    health = store.health()["crm"]
    assert health["failures"] >= 3 and "down for maintenance" in health["last_error"]
    assert store.pauses()["crm"]["kind"] == OUTAGE
    out = CliRunner(env={**ENV, "COLUMNS": "250"}).invoke(main, ["--config", str(config.path), "status"]).output
    assert "failing since" in out and "failures in a row" in out and "down for maintenance" in out
    for _ in range(2):
        time.sleep(store.pauses()["crm"]["until"] - time.time() + 0.01)
        sent = len(fake_crm.requests)
        assert worker.run_once("crm") == 1 and len(fake_crm.requests) == sent + 1  # one probe
    assert len(fake_crm.requests) == before + 2
    fake_crm.script.clear()  # the CRM is back
    time.sleep(store.pauses()["crm"]["until"] - time.time() + 0.01)
    worker.drain(timeout=20)
    assert len(fake_crm.records) == 12 and store.health() == {} and "crm" not in store.pauses()


def test_metrics_show_a_failing_destination(tmp_path, database_url, fake_crm):
    # a pause long enough to still be on when /metrics is read on a loaded machine (the default 0.05 s is not)
    config, store = http_setup(tmp_path, database_url, fake_crm.url,
                               worker={"breaker_threshold": 1, "backoff_base": 30, "backoff_max": 60})
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
        fake_crm.fail_next(502)
        Worker(Runtime(config, store)).run_once("crm")
        text = requests.get(f"{url}/metrics", timeout=5).text
    assert 'connector_destination_failing{destination="crm"} 1.0' in text
    assert 'connector_destination_consecutive_failures{destination="crm"} 1.0' in text
    assert 'connector_destination_paused{destination="crm",kind="outage"} 1.0' in text


def test_with_the_database_down_status_says_so_in_one_line(tmp_path):
    path = write_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    result = CliRunner(env=ENV).invoke(main, ["--config", str(path), "status"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "database unavailable" in lines[0] and "Traceback" not in result.output


def test_with_the_database_down_the_worker_logs_each_change_once(tmp_path, database_url, caplog):
    config = make_config(tmp_path, database_url)
    down = Worker(Runtime(config, Store("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")))
    with caplog.at_level(logging.INFO, logger="connector.worker"):
        for _ in range(5):
            assert down.round(["leads_file"]) == 0
        store = Store(config.database.url)
        store.upgrade()
        down.store = store
        down.round(["leads_file"])
        down.round(["leads_file"])
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unavailable" in m for m in messages) == 1
    assert sum("database reachable again" in m for m in messages) == 1
    assert not any(r.exc_info for r in caplog.records)
