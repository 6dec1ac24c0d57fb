"""The receiver over real HTTP: signatures, limits, bad input, duplicates, unknown events, probes."""

from __future__ import annotations

import json
import logging
import time

import requests
import sqlalchemy as sa

from connector.logs import JsonFormatter
from connector.runtime import Runtime
from connector.store.schema import deliveries, events
from connector.worker import Worker
from tests.conftest import OLD_SECRET, leaditio_payload, post_webhook, sign


def stored(store) -> list[dict]:  # noqa: ANN001
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(events).order_by(events.c.id))]


def delivery_rows(store) -> list[dict]:  # noqa: ANN001
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(deliveries))]


def test_valid_signature_is_stored_before_the_answer(receiver, store):
    answer = post_webhook(receiver, leaditio_payload())
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "event_id": 1, "deliveries": 1}
    [event] = stored(store)
    assert event["lead_id"] == "lead_abc123" and event["event_type"] == "lead.new"
    assert event["signature_index"] == 0
    assert json.loads(event["lead_json"])["email"] == "thabo.m@gmail.com"  # contact folded into the lead
    assert event["body"] == json.dumps(leaditio_payload()).encode()  # the raw body is kept
    assert [d["state"] for d in delivery_rows(store)] == ["pending"]


def test_bad_and_missing_signatures_are_refused(receiver, store):
    bad = post_webhook(receiver, leaditio_payload(), secret="not-the-secret")
    assert (bad.status_code, bad.json()["code"]) == (401, "unauthorized")
    missing = post_webhook(receiver, leaditio_payload(), secret=None)
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    assert "missing" in missing.json()["message"]
    assert stored(store) == []


def test_rotated_secret_is_accepted_and_recorded(receiver, store):
    answer = post_webhook(receiver, leaditio_payload(), secret=OLD_SECRET)
    assert answer.status_code == 200
    assert stored(store)[0]["signature_index"] == 1


def test_tampered_body_is_refused(receiver, store):
    body = json.dumps(leaditio_payload()).encode()
    signature = sign(body)
    tampered = body.replace(b'"score": 87', b'"score": 99')
    answer = requests.post(f"{receiver}/webhooks/leaditio", data=tampered,
                           headers={"X-Leaditio-Signature": signature}, timeout=5)
    assert answer.status_code == 401
    assert stored(store) == []


def test_oversized_body_is_413(tmp_path, database_url):
    from connector.store import Store
    from connector.web import create_app
    from fakes.server import serve
    from tests.conftest import make_config

    config = make_config(tmp_path, database_url, server={"max_body_bytes": 2048})
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        big = leaditio_payload(notes="x" * 4000)
        answer = post_webhook(url, big)
        assert (answer.status_code, answer.json()["code"]) == (413, "payload_too_large")
        assert post_webhook(url, leaditio_payload()).status_code == 200
    store.dispose()


def test_malformed_json_and_missing_lead_are_400(receiver, store):
    broken = post_webhook(receiver, b'{"event": "lead.new", ')
    assert (broken.status_code, broken.json()["code"]) == (400, "invalid_request")
    no_lead = post_webhook(receiver, {"event": "lead.new", "timestamp": "2026-05-20T10:23:44Z"})
    assert (no_lead.status_code, no_lead.json()["code"]) == (400, "invalid_request")
    assert "lead" in no_lead.json()["message"]
    not_object = post_webhook(receiver, b"[1, 2]")
    assert not_object.status_code == 400
    assert stored(store) == []


def test_unknown_source_is_404(receiver):
    answer = post_webhook(receiver, leaditio_payload(), source="leadzilla")
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    other = requests.get(f"{receiver}/nowhere", timeout=5)
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    wrong_method = requests.get(f"{receiver}/webhooks/leaditio", timeout=5)
    assert wrong_method.status_code == 405 and "code" in wrong_method.json()


def test_duplicates_are_answered_200_and_stored_once(receiver, store):
    payload = leaditio_payload()
    first = post_webhook(receiver, payload)
    again = post_webhook(receiver, payload)
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # the same event re-serialised (other whitespace) is the same marketplace event
    respaced = json.dumps(payload, indent=2).encode()
    assert post_webhook(receiver, respaced).json()["status"] == "duplicate"
    assert len(stored(store)) == 1 and len(delivery_rows(store)) == 1


def test_unknown_event_type_is_stored_not_delivered(receiver, store):
    answer = post_webhook(receiver, leaditio_payload(event="lead.archived"))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert stored(store)[0]["deliverable"] is False
    assert delivery_rows(store) == []


def test_probes_and_metrics(receiver, store):
    assert requests.get(f"{receiver}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{receiver}/readyz", timeout=5).status_code == 200
    post_webhook(receiver, leaditio_payload())
    post_webhook(receiver, leaditio_payload())
    post_webhook(receiver, leaditio_payload(), secret="wrong")
    text = requests.get(f"{receiver}/metrics", timeout=5).text
    assert "connector_webhooks_received_total" in text
    assert 'connector_webhooks_rejected_total{reason="unauthorized",source="leaditio"}' in text
    assert "connector_webhooks_duplicate_total" in text
    assert "connector_queue_depth 1.0" in text
    assert "connector_oldest_pending_age_seconds" in text
    assert 'connector_dead_letters{destination="leads_file"} 0.0' in text


def test_metrics_token(tmp_path, database_url, monkeypatch):
    from connector.config import load_config
    from connector.store import Store
    from connector.web import create_app
    from fakes.server import serve
    from tests.conftest import ENV, write_config

    path = write_config(tmp_path, database_url, server={"metrics_token": "${METRICS_TOKEN}"})
    config = load_config(path, env={**ENV, "METRICS_TOKEN": "tok"})
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
        ok = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer tok"}, timeout=5)
        assert ok.status_code == 200
    store.dispose()


def test_readyz_fails_when_the_store_is_gone(tmp_path):
    from connector.store import Store
    from connector.web import create_app
    from fakes.server import serve
    from tests.conftest import make_config

    config = make_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none")
    with serve(create_app(Runtime(config, Store(config.database.url)))) as url:
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 503
        answer = post_webhook(url, leaditio_payload())
        assert (answer.status_code, answer.json()["code"]) == (503, "unavailable")


def test_logs_never_contain_phone_or_email(receiver, caplog):
    from connector.logs import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        post_webhook(receiver, leaditio_payload())
        post_webhook(receiver, b'{"event": "lead.new", "lead": "thabo.m@gmail.com 0823456789"}')
    text = caplog.text
    assert "webhook leaditio lead.new" in text
    assert "thabo.m@gmail.com" not in text and "0823456789" not in text and "+27823456789" not in text
    assert "whsec_" not in text


def test_json_log_lines_are_what_json_dumps_writes():
    record = logging.LogRecord("connector.web", logging.WARNING, __file__, 1, 'a "quoted" %s\\n\tline', ("ünï",), None)
    record.exc_text = "Traceback:\n  boom"
    line = JsonFormatter().format(record)
    assert json.loads(line) == {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                                "level": "warning", "logger": "connector.web",
                                "message": 'a "quoted" ünï\\n\tline', "exception": "Traceback:\n  boom"}
    assert line == json.dumps(json.loads(line), ensure_ascii=False)
    formatter = JsonFormatter()  # records from threads arrive out of order: each keeps its own second
    for created in (100.9, 101.0, 100.5, 101.2):
        record.created = created
        expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(created)))
        assert json.loads(formatter.format(record))["time"] == expected


def test_json_log_lines_name_the_event_lead_destination_and_outcome_as_keys(receiver, config, store, caplog):
    with caplog.at_level(logging.INFO):
        event_id = post_webhook(receiver, leaditio_payload("lead_keys")).json()["event_id"]
        Worker(Runtime(config, store)).drain(timeout=10)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    received = next(line for line in lines if line.get("lead_id") == "lead_keys")
    assert received | {"event_id": event_id, "source": "leaditio", "event_type": "lead.new",
                       "outcome": "accepted"} == received
    delivered = next(line for line in lines if line.get("lead_key") == "leaditio:lead_keys")
    assert delivered | {"event_id": event_id, "destination": "leads_file", "outcome": "delivered"} == delivered
    assert isinstance(delivered["delivery_id"], int)
