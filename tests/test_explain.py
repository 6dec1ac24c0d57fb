"""`connector explain`: a lead's story told from what the receiver and worker really did, on both databases."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.explain import build
from connector.records import Decision, MappedRecord, OutboundRecord, UpdatePolicy, field_decisions
from connector.runtime import Runtime, load_runtime
from connector.store import Verdict
from connector.store.schema import ATTEMPTS_KEPT, DELIVERED, PENDING, delivery_attempts
from connector.timeutil import parse_iso
from connector.web import create_app
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import ENV, OLD_SECRET, cli_for, leaditio_payload, post_webhook, write_config


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
    cli = cli_for(path)

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
    assert "[phone]" in text and "[email]" in text  # shown as placeholders, not eaten as console markup
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


def test_explain_names_the_secret_the_clamp_and_an_event_filter(tmp_path, database_url):
    path = write_config(tmp_path, database_url,
                        routes=[{"source": "leaditio", "destination": "leads_file", "events": ["lead.new"]}])
    runtime = load_runtime(path, env=ENV)
    runtime.store.upgrade()
    with serve(create_app(runtime)) as url:
        assert post_webhook(url, leaditio_payload(timestamp="2099-01-01T00:00:00Z"), secret=OLD_SECRET).ok
        assert post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z")).ok
    story = build(runtime, "lead_abc123", runtime.store.lead_history("lead_abc123", "leaditio"))
    clamped, updated = story.events
    assert clamped.verified_by.startswith("secret #2") and updated.verified_by.startswith("secret #1")
    assert clamped.stated_occurred_at == parse_iso("2099-01-01T00:00:00Z")
    assert clamped.occurred_at <= clamped.received_at + 3600
    assert [(r.destination, r.took, r.why) for r in updated.routes] == [
        ("leads_file", False, "event type is lead.updated, route wants ['lead.new']")]
    assert updated.deliveries == []
    (fieldset,) = story.fields  # not sent yet: the decisions are worked out now, as a new record
    assert not fieldset.recorded and not fieldset.update
    assert {f.decision for f in fieldset.fields if f.policy != "never"} <= {"written", "empty"}
    result = CliRunner(env={**ENV, "COLUMNS": "250"}).invoke(main, ["--config", str(path), "explain", "lead_abc123"])
    assert result.exit_code == 0, result.output
    assert "lay too far ahead of its receipt" in result.output and "2099-01-01T00:00:00Z" in result.output
    runtime.store.dispose()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.tuples(st.sampled_from(list(UpdatePolicy)),
                                                                            st.booleans()), min_size=1),
       st.booleans())
def test_decisions_say_what_the_payload_writes(fields, known):
    """`written` is exactly what OutboundRecord.payload sends without reading the CRM's record."""
    mapped = MappedRecord({n: "v" for n, (_, present) in fields.items() if present},
                          {n: policy for n, (policy, _) in fields.items()})
    decisions = field_decisions(mapped, known)
    sent = OutboundRecord(1, "k", "lead.new", mapped.values, mapped.policies, known=known).payload()
    assert {n for n, d in decisions.items() if d["decision"] == Decision.written} == set(sent)
    for name, (policy, present) in fields.items():
        assert decisions[name]["policy"] == policy
        if not present:
            assert decisions[name]["decision"] == Decision.empty
        elif known and policy is UpdatePolicy.on_create:
            assert decisions[name]["decision"] == Decision.kept_on_create
        elif known and policy is UpdatePolicy.if_empty:
            assert decisions[name]["decision"] == Decision.if_empty
