"""The worker end to end: webhook in over HTTP, worker out to a CRM over HTTP, on both databases."""

from __future__ import annotations

import time
from pathlib import Path

from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED, PENDING, SKIPPED, STALE
from connector.web import create_app
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import leaditio_payload, make_config, post_webhook, read_jsonl


def http_setup(tmp_path: Path, database_url: str, crm_url: str, **kw):  # noqa: ANN201
    config = make_config(tmp_path, database_url,
                         destinations={"crm": {"type": "http", "url": crm_url, "mapping": "mappings/file.yaml"}},
                         routes=[{"source": "leaditio", "destination": "crm"}], **kw)
    store = Store(config.database.url)
    store.upgrade()
    return config, store


def states(store: Store, destination: str | None = None) -> list[str]:
    rows = store.deliveries_query(destination=destination, limit=1000)
    return [r["state"] for r in sorted(rows, key=lambda r: r["id"])]


def test_lead_travels_to_the_file(receiver, config, store, tmp_path):
    post_webhook(receiver, leaditio_payload())
    Worker(Runtime(config, store)).drain(timeout=10)
    row = read_jsonl(tmp_path / "leads.jsonl")["leaditio:lead_abc123"]
    assert row["phone"] == "+27823456789" and row["rating"] == "Hot"
    assert (row["budget_min"], row["budget_max"]) == (100000, 150000)
    assert states(store) == [DELIVERED]


def test_events_of_one_lead_are_applied_in_order(receiver, config, store, tmp_path):
    post_webhook(receiver, leaditio_payload(timestamp="2026-05-20T10:00:00Z", score=50, score_tier="warm"))
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=90))
    Worker(Runtime(config, store)).drain(timeout=10)
    row = read_jsonl(tmp_path / "leads.jsonl")["leaditio:lead_abc123"]
    assert row["score"] == 90 and row["event"] == "lead.updated"
    assert states(store) == [DELIVERED, DELIVERED]


def test_out_of_order_delivery_skips_the_older_event(receiver, config, store, tmp_path):
    worker = Worker(Runtime(config, store))
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=90))
    worker.drain(timeout=10)
    post_webhook(receiver, leaditio_payload(timestamp="2026-05-20T10:00:00Z", score=50))  # lead.new, late
    worker.drain(timeout=10)
    assert read_jsonl(tmp_path / "leads.jsonl")["leaditio:lead_abc123"]["score"] == 90
    assert states(store) == [DELIVERED, STALE]


def test_stale_update_is_recorded_and_skipped(receiver, config, store, tmp_path):
    worker = Worker(Runtime(config, store))
    post_webhook(receiver, leaditio_payload(timestamp="2026-05-20T12:00:00Z", score=70))
    worker.drain(timeout=10)
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=10))
    worker.drain(timeout=10)
    assert read_jsonl(tmp_path / "leads.jsonl")["leaditio:lead_abc123"]["score"] == 70
    stale = store.deliveries_query(state=STALE)[0]
    assert "newer" in stale["last_error"]


def test_update_policies_protect_what_sales_owns(receiver, config, store, tmp_path):
    worker = Worker(Runtime(config, store))
    post_webhook(receiver, leaditio_payload(timestamp="2026-05-20T10:00:00Z"))
    worker.drain(timeout=10)
    path = tmp_path / "leads.jsonl"
    path.write_text(path.read_text().replace('"status": "New"', '"status": "Contacted"'))  # a rep's change
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=95))
    worker.drain(timeout=10)
    row = read_jsonl(path)["leaditio:lead_abc123"]
    assert row["score"] == 95 and row["status"] == "Contacted"


def test_retry_then_success(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    fake_crm.fail_next(503, times=2)
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
    Worker(Runtime(config, store)).drain(timeout=10)
    [row] = store.deliveries_query()
    assert row["state"] == DELIVERED and row["attempts"] == 2
    assert len(fake_crm.requests) == 3 and len(fake_crm.records) == 1
    sent = fake_crm.requests[-1]["headers"]
    assert sent["Idempotency-Key"] == fake_crm.requests[0]["headers"]["Idempotency-Key"]
    assert row["crm_id"] == "crm-leaditio:lead_abc123"


def test_429_retry_after_is_honoured(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    fake_crm.fail_next(429, headers={"Retry-After": "120"})
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
    Worker(Runtime(config, store)).run_once("crm")
    [row] = store.deliveries_query()
    assert row["state"] == PENDING and row["attempts"] == 1
    assert 110 < row["next_attempt_at"] - time.time() <= 121


def test_permanent_rejection_is_a_dead_letter_with_the_crm_message(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    fake_crm.fail_next(422, body={"code": "invalid_field", "message": "suburb is not allowed"})
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
    Worker(Runtime(config, store)).drain(timeout=10)
    [row] = store.deliveries_query()
    assert row["state"] == DEAD
    assert row["last_error_code"] == "invalid_field" and "suburb is not allowed" in row["last_error"]
    store.requeue(state=DEAD)
    Worker(Runtime(config, store)).drain(timeout=10)
    assert store.deliveries_query()[0]["state"] == DELIVERED


def test_retries_stop_at_the_horizon(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url, worker={"retry_horizon": 0.3})
    fake_crm.fail_next(500, times=1000)
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
    Worker(Runtime(config, store)).drain(timeout=10)
    [row] = store.deliveries_query()
    assert row["state"] == DEAD and row["last_error"].startswith("gave up after")


def test_crm_auth_failure_pauses_the_destination_instead_of_dead_lettering(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url)
    fake_crm.fail_next(401, body={"code": "unauthorized", "message": "bad token"})
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload())
    worker = Worker(Runtime(config, store))
    worker.run_once("crm")
    [row] = store.deliveries_query()
    assert row["state"] == PENDING and row["attempts"] == 0
    assert "bad token" in store.pauses()["crm"]["reason"]
    worker.drain(timeout=10)  # the pause runs out, the token works again
    assert store.deliveries_query()[0]["state"] == DELIVERED
    assert "crm" not in store.pauses()


def test_dead_letter_then_retry_after_a_mapping_fix(receiver, config, store, tmp_path):
    mapping = tmp_path / "mappings" / "file.yaml"
    original = mapping.read_text()
    mapping.write_text(original.replace("lead_id: {from: id, required: true}",
                                        "lead_id: {from: id, required: true}\n  owner: {from: urgency_owner, "
                                        "required: true}").replace("urgency_owner", "sub_vertical_owner"))
    # sub_vertical_owner is not a lead field: that is a config error, not a dead letter
    post_webhook(receiver, leaditio_payload())
    worker = Worker(Runtime(config, store))
    worker.run_once("leads_file")
    assert states(store) == [PENDING]
    assert "unknown lead field 'sub_vertical_owner'" in store.pauses()["leads_file"]["reason"]
    # a valid mapping that requires a field this lead lacks: a dead letter
    mapping.write_text(original.replace("lead_id: {from: id, required: true}",
                                        "lead_id: {from: id, required: true}\n  last_name: {from: last_name, "
                                        "required: true}"))
    worker.drain(timeout=10)
    assert states(store) == [DEAD]
    assert "last_name is required" in store.deliveries_query()[0]["last_error"]
    mapping.write_text(original)  # the admin fixes the mapping and retries the dead letters
    assert store.requeue(state=DEAD) == 1
    worker.drain(timeout=10)
    assert states(store) == [DELIVERED]
    assert "leaditio:lead_abc123" in read_jsonl(tmp_path / "leads.jsonl")


def test_routes_filter_by_lead_field(tmp_path, database_url):
    config = make_config(tmp_path, database_url, destinations={
        "hot": {"type": "file", "path": str(tmp_path / "hot.jsonl"), "mapping": "mappings/file.yaml"},
        "all": {"type": "file", "path": str(tmp_path / "all.csv"), "mapping": "mappings/file.yaml"}},
        routes=[{"source": "leaditio", "destination": "hot", "where": {"score_tier": "hot"}},
                {"source": "leaditio", "destination": "all", "events": ["lead.new"]}])
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload("lead_hot"))
        post_webhook(url, leaditio_payload("lead_warm", score_tier="warm"))
        post_webhook(url, leaditio_payload("lead_hot", event="lead.updated", timestamp="2026-05-21T00:00:00Z"))
    Worker(Runtime(config, store)).drain(timeout=10)
    hot = read_jsonl(tmp_path / "hot.jsonl")
    assert set(hot) == {"leaditio:lead_hot"} and hot["leaditio:lead_hot"]["event"] == "lead.updated"
    import csv
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert sorted(r["lead_key"] for r in rows) == ["leaditio:lead_hot", "leaditio:lead_warm"]
    assert {r["event"] for r in rows} == {"lead.new"}


def test_replay_resends_and_force_overrides_staleness(receiver, config, store, tmp_path):
    worker = Worker(Runtime(config, store))
    post_webhook(receiver, leaditio_payload(timestamp="2026-05-20T10:00:00Z", score=10))
    post_webhook(receiver, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=20))
    worker.drain(timeout=10)
    path = tmp_path / "leads.jsonl"
    path.unlink()
    ids = store.replay_ids(lead_id="lead_abc123")
    assert store.requeue(delivery_ids=ids) == 1
    worker.drain(timeout=10)
    assert read_jsonl(path)["leaditio:lead_abc123"]["score"] == 20
    first_event = store.deliveries_query(limit=10)[-1]["event_id"]
    store.requeue(delivery_ids=store.replay_ids(event_id=first_event))
    worker.drain(timeout=10)
    assert read_jsonl(path)["leaditio:lead_abc123"]["score"] == 20  # older event: stale
    store.requeue(delivery_ids=store.replay_ids(event_id=first_event), force=True)
    worker.drain(timeout=10)
    assert read_jsonl(path)["leaditio:lead_abc123"]["score"] == 10


def test_skip_outcome_is_recorded(tmp_path, database_url):
    from connector.destinations import DESTINATIONS
    from connector.destinations.base import Destination, DestinationSettings
    from connector.errors import Skip
    from connector.records import Outcome

    class Converted(Destination):
        kind = "test_converted"
        Settings = DestinationSettings

        def send(self, records):  # noqa: ANN001, ANN201
            return [Outcome(r.delivery_id, error=Skip("lead was converted", code="CANNOT_UPDATE_CONVERTED_LEAD"))
                    for r in records]

    DESTINATIONS["test_converted"] = Converted
    try:
        config = make_config(tmp_path, database_url,
                             destinations={"c": {"type": "test_converted", "mapping": "mappings/file.yaml"}},
                             routes=[{"source": "leaditio", "destination": "c"}])
        store = Store(config.database.url)
        store.upgrade()
        with serve(create_app(Runtime(config, store))) as url:
            post_webhook(url, leaditio_payload())
        Worker(Runtime(config, store)).drain(timeout=10)
        [row] = store.deliveries_query()
        assert row["state"] == SKIPPED and row["last_error_code"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    finally:
        DESTINATIONS.pop("test_converted", None)


def test_accept_many_routes_dedupes_and_delivers(config, store, tmp_path):
    import json

    from connector.intake import accept_many

    marketplace = Runtime(config).marketplaces["leaditio"]
    bodies = [json.dumps(leaditio_payload(f"lead_{i}")).encode() for i in range(7)]
    items = [(marketplace.parse(b), b) for b in bodies + bodies[:2]]  # two sent twice
    assert accept_many(config, store, items, chunk=3) == 9
    assert store.status()["queue_depth"] == 7
    Worker(Runtime(config, store)).drain(timeout=10)
    assert len(read_jsonl(tmp_path / "leads.jsonl")) == 7
