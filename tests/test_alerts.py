"""Alerts through the real Apprise, to a local webhook over real HTTP (Apprise's json:// sends a JSON
POST), driven by the real worker and store on SQLite and PostgreSQL: once per change of state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import load_config
from connector.errors import ConfigError
from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED
from connector.web import create_app
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config


def setup(tmp_path: Path, database_url: str, crm_url: str, alert_url: str, **alerts: Any) -> Runtime:
    path = write_config(tmp_path, database_url,
                        destinations={"crm": {"type": "http", "url": crm_url, "mapping": "mappings/file.yaml"}},
                        routes=[{"source": "leaditio", "destination": "crm"}],
                        worker={"backoff_base": 0.05, "backoff_max": 0.2, "breaker_threshold": 5})
    settings = {"urls": ["${ALERT_URL}"], "check_interval": 0.001, **alerts}
    path.write_text(path.read_text() + yaml.safe_dump({"alerts": settings}))
    config = load_config(path, env={**ENV, "ALERT_URL": alert_url})
    store = Store(config.database.url)
    store.upgrade()
    return Runtime(config, store)


def test_an_outage_makes_one_failing_and_one_recovered_alert(tmp_path, database_url, fake_crm, sink):
    runtime = setup(tmp_path, database_url, fake_crm.url, sink.url)
    fake_crm.fail_next(503, times=8)
    with serve(create_app(runtime)) as url:
        post_webhook(url, leaditio_payload())
    worker = Worker(runtime)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and runtime.store.deliveries_query()[0]["state"] != DELIVERED:
        worker.round(["crm"])
        time.sleep(0.02)
    for _ in range(5):  # later checks: nothing changed, nothing sent
        runtime.alerter._next_check = 0
        worker.round(["crm"])
    assert runtime.store.deliveries_query()[0]["state"] == DELIVERED
    assert len(fake_crm.requests) == 9  # eight failed tries, then the delivery
    assert sink.titles() == ["Destination crm is failing", "Destination crm recovered"]
    failing = sink.bodies[0]
    assert failing["type"] == "failure" and "connector status" in failing["message"]
    assert sink.bodies[1]["type"] == "success"


def test_dead_letters_of_one_interval_make_one_alert_with_counts_by_code(tmp_path, database_url, fake_crm, sink):
    runtime = setup(tmp_path, database_url, fake_crm.url, sink.url, dead_letter_interval="15m")
    fake_crm.fail_next(422, times=2, body={"code": "invalid_field", "message": "suburb is not allowed"})
    fake_crm.fail_next(422, body={"code": "duplicate", "message": "already exists"})
    with serve(create_app(runtime)) as url:
        for index in range(3):
            post_webhook(url, leaditio_payload(lead_id=f"lead_{index}"))
    Worker(runtime).drain(timeout=10)
    assert sorted(r["state"] for r in runtime.store.deliveries_query()) == [DEAD] * 3
    alerter = runtime.alerter
    later = time.time() + 15 * 60 + 1
    alerter.check()
    alerter.check(now=later)  # the worker's own checks already counted them (its first look covers
    alerter.check(now=later + 1)  # the last interval); later intervals have nothing new to send
    assert sink.titles() == ["3 new dead letters (crm)"]
    message = sink.bodies[0]["message"]
    assert "crm: 3 (invalid_field: 2, duplicate: 1)" in message
    assert "connector deadletters list -d crm" in message and "connector explain lead_" in message


def test_two_workers_processes_send_a_change_once(tmp_path, database_url, fake_crm, sink):
    runtime = setup(tmp_path, database_url, fake_crm.url, sink.url)
    other = Runtime(runtime.config, runtime.store)
    runtime.store.pause("crm", time.time() + 60, "config", "401 Unauthorized: bad token")
    sent = runtime.alerter.check() + other.alerter.check()
    assert [a.title for a in sent] == ["Destination crm is failing"] and len(sink.bodies) == 1
    assert "Paused until" in sink.bodies[0]["message"]


def test_an_alert_url_apprise_does_not_know_is_a_config_error_naming_the_variable(tmp_path, database_url):
    with pytest.raises(ConfigError, match="alerts.urls\\[0\\].*ALERT_URL.*not an alert URL"):
        setup(tmp_path, database_url, "http://127.0.0.1:9/leads", "nonsense-url")


def test_alert_urls_are_redacted_like_secrets(tmp_path, database_url, sink):
    runtime = setup(tmp_path, database_url, "http://127.0.0.1:9/leads", "json://127.0.0.1:9/T0123456789ABCDEFGHIJ")
    assert "T0123456789ABCDEFGHIJ" not in runtime.redactor("posting to json://127.0.0.1:9/T0123456789ABCDEFGHIJ")


def test_oldest_pending_too_old_alerts_once_and_once_more_when_it_clears(tmp_path, database_url, fake_crm, sink):
    runtime = setup(tmp_path, database_url, fake_crm.url, sink.url, oldest_pending_after="30m")
    with serve(create_app(runtime)) as url:
        post_webhook(url, leaditio_payload())
    alerter = runtime.alerter
    later = time.time() + 31 * 60
    alerter.check(now=later)
    alerter.check(now=later + 60)  # still late: no second alert
    Worker(runtime).drain(timeout=10)
    alerter.check(now=later + 120)
    assert sink.titles() == ["Leads for crm wait too long", "Leads for crm no longer wait too long"]
    assert "oldest of 1 pending leads for crm has waited 31 min" in sink.bodies[0]["message"]
