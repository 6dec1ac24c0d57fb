"""`connector explain`: a lead's story told from what the receiver and worker really did, on both databases."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli import main
from connector.explain import build
from connector.runtime import Runtime, load_runtime
from connector.store import Verdict
from connector.store.schema import ATTEMPTS_KEPT, DELIVERED, PENDING, delivery_attempts
from connector.web import create_app
from connector.worker import Worker
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config
from tests.fakes.server import serve


def payload(event: str, at: str, tier: str, phone: str = "+27823456789") -> dict:
    document = leaditio_payload(event=event, timestamp=at, score_tier=tier)
    document["contact"]["phone"] = phone
    return document


def test_explain_tells_the_story_of_a_lead(tmp_path, database_url, fake_crm):
    path = write_config(
        tmp_path, database_url,
        destinations={"crm": {"type": "http", "url": fake_crm.url, "mapping": "mappings/file.yaml"},
                      "hot_file": {"type": "file", "path": str(tmp_path / "hot.jsonl"), "mapping": "mappings/file.yaml"}},
        routes=[{"source": "leaditio", "destination": "crm"},
                {"source": "leaditio", "destination": "hot_file", "where": {"score_tier": ["hot", "warm"]}}])
    runner = CliRunner(env={**ENV, "COLUMNS": "250"})

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    cli("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    worker = Worker(runtime)
    with serve(create_app(runtime)) as url:
        fake_crm.fail_next(503)
        assert post_webhook(url, payload("lead.new", "2026-05-20T10:00:00Z", "cold", phone="12345")).ok
        worker.drain(timeout=15)
        assert post_webhook(url, payload("lead.updated", "2026-05-20T11:00:00Z", "hot")).ok
        worker.drain(timeout=15)
        assert post_webhook(url, payload("lead.updated", "2026-05-20T10:30:00Z", "hot")).ok  # late and older
        worker.drain(timeout=15)

    story = json.loads(cli("explain", "lead_abc123", "--json"))
    first, second, late = story["events"]
    assert [e["event_type"] for e in story["events"]] == ["lead.new", "lead.updated", "lead.updated"]
    assert first["origin"] == "webhook" and first["verified_by"].startswith("secret #1")
    assert first["stated_occurred_at"] is None
    routes = {r["destination"]: r for r in first["routes"]}
    assert routes["crm"]["took"] and not routes["hot_file"]["took"]
    assert routes["hot_file"]["why"] == "score_tier is cold, route wants ['hot', 'warm']"
    (delivery,) = first["deliveries"]
    assert delivery["destination"] == "crm" and delivery["state"] == "delivered"
    retry, delivered = delivery["attempts"]
    assert retry["outcome"] == "retry" and retry["retry_after"] is not None and "503" in retry["text"]
    assert retry["request"] == {"batch": 1, "update": False, "mapping": "file.yaml"}
    assert delivered["outcome"] == "delivered" and delivered["worker"] == worker.owner
    assert {d["destination"] for d in second["deliveries"]} == {"crm", "hot_file"}
    second_crm = next(d for d in second["deliveries"] if d["destination"] == "crm")
    assert second_crm["attempts"][-1]["request"]["update"] is True
    late_crm = next(d for d in late["deliveries"] if d["destination"] == "crm")
    assert late_crm["state"] == "stale"
    assert f"event {second['id']} of this lead is newer" in late_crm["attempts"][0]["text"]
    assert story["crm_ids"]["crm"] == fake_crm.records["leaditio:lead_abc123"].get("id", story["crm_ids"]["crm"])

    fields = {f["destination"]: f for f in story["fields"]}["crm"]
    assert fields["event_id"] == second["id"] and fields["update"] and fields["recorded"]
    by_name = {f["name"]: f for f in fields["fields"]}
    assert by_name["status"]["policy"] == "on_create" and by_name["status"]["decision"] == "kept_on_create"
    assert by_name["rating"]["decision"] == "written"
    assert by_name["phone"]["value"] == "[phone]"  # redacted without --show-personal

    # the invalid phone of the first event: left empty, with the mapping's note, recorded when it was sent
    with runtime.store.engine.connect() as conn:
        summaries = [json.loads(s) for (s,) in conn.execute(sa.select(delivery_attempts.c.summary)
                                                            .where(delivery_attempts.c.delivery_id == delivery["id"]))]
    phone = summaries[-1]["fields"]["phone"]
    assert phone["decision"] == "empty" and "not a valid South African number" in phone["note"]
    assert "12345" not in json.dumps(summaries) and "Thabo" not in json.dumps(summaries)  # names, never values

    text = cli("explain", "lead_abc123")
    assert "did not take it: score_tier is cold, route wants ['hot', 'warm']" in text
    assert "retry after" in text and "kept: on_create, and this was an update" in text
    assert "+27823456789" not in text and "thabo.m@gmail.com" not in text
    assert "+27823456789" in cli("explain", "lead_abc123", "--show-personal")
    assert "no lead nobody" in cli("explain", "nobody", code=1)
    assert "no lead lead_abc123 from other" in cli("explain", "lead_abc123", "--source", "other", code=1)
    runtime.store.dispose()


def test_attempt_history_is_bounded_and_pruned_with_its_event(receiver, config, store):
    assert post_webhook(receiver, leaditio_payload()).ok
    for _ in range(ATTEMPTS_KEPT + 5):
        (item,) = store.claim("leads_file", 1, "w1", lease=30).claimed
        store.settle("w1", [Verdict(item, PENDING, last_error="scripted", last_error_code="http_503",
                                    attempts=item.attempts + 1, next_attempt_at=time.time() - 1)])
    history = store.lead_history("lead_abc123")
    assert len(history.attempts) == ATTEMPTS_KEPT
    assert all(a["owner"] == "w1" and a["error_code"] == "http_503" for a in history.attempts)
    story = build(Runtime(config, store), "lead_abc123", history)
    assert story.events[0].deliveries[0].attempts[-1].outcome == "retry"
    store.settle("w1", [])
    store.requeue(state=PENDING)
    (item,) = store.claim("leads_file", 1, "w1", lease=30).claimed
    store.settle("w1", [Verdict(item, DELIVERED)])
    assert store.prune(older_than=-60) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(delivery_attempts)).scalar() == 0
    assert store.lead_history("lead_abc123").events == []
