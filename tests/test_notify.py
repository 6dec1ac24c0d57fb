"""Speed-to-lead notices through the real Apprise to a local channel webhook (json:// posts the notice as
JSON), driven by the real receiver, worker and store on SQLite and PostgreSQL; the speed to lead kept per
delivery, in /metrics' histogram, in `explain` and in the store's reads for the console."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from connector.config import load_config
from connector.errors import ConfigError
from connector.metrics import render
from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DELIVERED
from connector.store.speed import percentile
from connector.web import create_app
from connector.worker import Worker
from fakes.hubspot import PORTAL_ID, FakeHubSpot, hubspot_server
from fakes.server import serve
from tests.conftest import ENV, cli_for, leaditio_payload, post_webhook, write_config


class Channel:
    """A team channel's webhook: keeps every notice Apprise posts; `hold` makes it wait before answering."""

    def __init__(self, status: str = "200 OK") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        self.hold: threading.Event | None = None

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if self.hold is not None:
            self.hold.wait(30)
        size = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(json.loads(environ["wsgi.input"].read(size)))
        start_response(self.status, [("Content-Type", "application/json")])
        return [b"{}"]


@pytest.fixture
def channel() -> Any:
    channel = Channel()
    with serve(channel.app, quiet=True) as url:
        channel.url = url.replace("http://", "json://") + "/hooks/T0SALESCHANNEL0000000"
        yield channel


def setup(tmp_path: Path, database_url: str, destination: dict[str, Any], channel_url: str, name: str = "crm",
          env: dict[str, str] | None = None, **notify: Any) -> Runtime:
    path = write_config(tmp_path, database_url, destinations={name: destination},
                        routes=[{"source": "leaditio", "destination": name,
                                 "notify": {"urls": ["${SALES_CHANNEL_URL}"], **notify}}])
    config = load_config(path, env={**ENV, "SALES_CHANNEL_URL": channel_url, **(env or {})})
    store = Store(config.database.url)
    store.upgrade()
    return Runtime(config, store)


def http_crm(url: str) -> dict[str, Any]:
    return {"type": "http", "url": url, "mapping": "mappings/file.yaml",
            "record_url": "https://crm.example.com/leads/{id}/view"}


def ago(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds, UTC).isoformat().replace("+00:00", "Z")


def fresh(**lead: Any) -> dict[str, Any]:
    """A lead the marketplace delivered a moment ago (the documented example's delivered_at is months old)."""
    return leaditio_payload(**{"delivered_at": ago(5), **lead})


def deliver(runtime: Runtime, *payloads: dict[str, Any]) -> Worker:
    with serve(create_app(runtime)) as url:
        for payload in payloads:
            assert post_webhook(url, payload).status_code == 200
    worker = Worker(runtime)
    worker.drain(timeout=20)
    assert runtime.notifier is not None and runtime.notifier.flush(20)
    return worker


def histogram(source: str, destination: str) -> float:
    return REGISTRY.get_sample_value("connector_speed_to_lead_seconds_count",
                                     {"source": source, "destination": destination}) or 0.0


def test_a_new_lead_is_announced_once_with_its_link_tier_vertical_and_suburb_and_no_personal_data(
        tmp_path, database_url, fake_crm, channel, monkeypatch):
    runtime = setup(tmp_path, database_url, http_crm(fake_crm.url), channel.url, name="crm_a")
    before = histogram("leaditio", "crm_a")
    deliver(runtime, leaditio_payload(delivered_at=ago(40)),
            leaditio_payload(event="lead.updated", timestamp="2026-05-21T10:00:00Z", score_tier="warm"))

    assert [r["state"] for r in runtime.store.deliveries_query()] == [DELIVERED, DELIVERED]
    assert len(channel.bodies) == 1  # the update is no new lead
    notice = channel.bodies[0]
    assert notice["title"] == "New hot solar lead in crm_a: Sandton"
    text = notice["message"]
    assert "Tier: hot (score 87)" in text and "Vertical: solar" in text and "Suburb: Sandton" in text
    assert "Open in the CRM: https://crm.example.com/leads/crm-leaditio%3Alead_abc123/view" in text
    assert "connector explain lead_abc123 --source leaditio" in text and "/console/leads/lead_abc123" in text
    for personal in ("+27823456789", "823456789", "thabo.m@gmail.com", "Thabo", "Phone", "Email"):
        assert personal not in text

    first, update = sorted(runtime.store.deliveries_query(), key=lambda r: r["id"])
    assert 40 <= first["speed_to_lead"] < 40 + 60 and first["written_at"] is not None
    assert update["speed_to_lead"] is None and update["written_at"] >= first["written_at"]
    assert f"In the CRM {first['speed_to_lead']:.0f} s after leaditio delivered it" in text
    assert histogram("leaditio", "crm_a") == before + 1  # the update is not observed
    exposed = render(runtime.store).decode()
    assert 'connector_speed_to_lead_seconds_bucket{destination="crm_a",le="60.0",source="leaditio"}' in exposed
    assert 'connector_notices_total{destination="crm_a",outcome="sent"}' in exposed

    (route,) = runtime.store.speed_by_route()
    assert (route.source, route.destination, route.leads) == ("leaditio", "crm_a", 1)
    assert route.median == route.p90 == route.slowest == pytest.approx(first["speed_to_lead"])
    (recent,) = runtime.store.speed_recent()
    assert (recent.lead_id, recent.crm_id, recent.seconds) == ("lead_abc123", "crm-leaditio:lead_abc123",
                                                              pytest.approx(first["speed_to_lead"]))
    monkeypatch.setenv("SALES_CHANNEL_URL", channel.url)  # the CLI reads the same config
    story = json.loads(cli_for(runtime.config.path)("explain", "lead_abc123", "--json"))
    speeds = [d["speed_to_lead"] for e in story["events"] for d in e["deliveries"]]
    assert speeds == [pytest.approx(first["speed_to_lead"]), None]
    assert "speed to lead: in the CRM" in cli_for(runtime.config.path)("explain", "lead_abc123")


def test_phone_and_email_are_in_the_notice_only_when_the_route_asks(tmp_path, database_url, fake_crm, channel):
    runtime = setup(tmp_path, database_url, http_crm(fake_crm.url), channel.url, phone=True, email=True)
    deliver(runtime, fresh())
    text = channel.bodies[0]["message"]
    assert "Phone: +27823456789" in text and "Email: thabo.m@gmail.com" in text
    assert "Thabo" not in text  # names are never sent


def test_a_lead_delivered_by_the_marketplace_long_ago_lands_without_a_notice(tmp_path, database_url, fake_crm,
                                                                             channel):
    runtime = setup(tmp_path, database_url, http_crm(fake_crm.url), channel.url, name="crm_old", max_age="1h")
    old = REGISTRY.get_sample_value("connector_notices_total", {"destination": "crm_old", "outcome": "too_old"}) or 0
    deliver(runtime, leaditio_payload(lead_id="backfilled", delivered_at=ago(2 * 3600)), fresh(lead_id="new"))
    assert [b["title"] for b in channel.bodies] == ["New hot solar lead in crm_old: Sandton"]
    assert "explain new " in channel.bodies[0]["message"]
    assert REGISTRY.get_sample_value("connector_notices_total",
                                     {"destination": "crm_old", "outcome": "too_old"}) == old + 1
    speeds = sorted(r["speed_to_lead"] for r in runtime.store.deliveries_query())
    assert speeds[0] < 60 and speeds[1] >= 2 * 3600  # its speed is recorded all the same


def test_a_slow_channel_never_holds_up_delivery_and_a_failing_one_is_counted_and_logged_redacted(
        tmp_path, database_url, fake_crm, caplog):
    channel = Channel(status="500 Internal Server Error")
    channel.hold = threading.Event()
    with serve(channel.app, quiet=True) as url:
        secret_part = "T0SALESCHANNEL0000000"
        runtime = setup(tmp_path, database_url, http_crm(fake_crm.url), f"json://{url.split('://')[1]}/{secret_part}")
        failed = REGISTRY.get_sample_value("connector_notices_total", {"destination": "crm", "outcome": "failed"}) or 0
        with serve(create_app(runtime)) as receiver:
            post_webhook(receiver, fresh())
            post_webhook(receiver, fresh(lead_id="lead_two"))
        Worker(runtime).drain(timeout=20)
        # both leads are in the CRM while the channel still holds the first notice
        assert [r["state"] for r in runtime.store.deliveries_query()] == [DELIVERED, DELIVERED]
        assert channel.bodies == []
        caplog.set_level(logging.ERROR, logger="connector.notify")
        channel.hold.set()
        assert runtime.notifier.flush(20)
    assert len(channel.bodies) == 2
    assert REGISTRY.get_sample_value("connector_notices_total",
                                     {"destination": "crm", "outcome": "failed"}) == failed + 2
    logged = [r.getMessage() for r in caplog.records if r.name == "connector.notify"]
    assert len(logged) == 2 and all("could not be sent" in m for m in logged)
    assert not any(secret_part in runtime.redactor(m) for m in logged)


def test_hubspot_links_use_the_account_s_portal_and_ui_domain_asked_once(tmp_path, database_url, channel):
    token = "pat-na1-notice-0000-1111-2222-333333333333"
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (fake, url, _ca):
        runtime = setup(tmp_path, database_url, {
            "type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}",
            "host": url, "client_side_validation": True}, channel.url, name="hubspot",
            env={"HUBSPOT_ACCESS_TOKEN": token})
        runtime.destination("hubspot").setup(runtime.mapping("hubspot"))
        second = fresh(lead_id="lead_two")
        second["contact"] = {"phone": "+27821112222", "email": "lerato.k@example.com"}
        deliver(runtime, fresh(), second)
        assert {r["state"] for r in runtime.store.deliveries_query()} == {DELIVERED}
        crm_ids = {r["lead_key"]: r["crm_id"] for r in runtime.store.deliveries_query()}
        lookups = [c for c in fake.calls if c[1] == "/account-info/v3/details"]
    links = sorted(line for body in channel.bodies for line in body["message"].splitlines() if "Open in" in line)
    assert links == sorted(f"Open in the CRM: https://app-eu1.hubspot.com/contacts/{PORTAL_ID}/record/0-1/{crm_id}"
                           for crm_id in crm_ids.values())
    assert len(lookups) == 1


def test_a_configured_hubspot_portal_needs_no_lookup(tmp_path, database_url, channel):
    token = "pat-na1-notice-0000-1111-2222-444444444444"
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (fake, url, _ca):
        runtime = setup(tmp_path, database_url, {
            "type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}",
            "host": url, "portal_id": 777, "object": "contacts"}, channel.url, name="hubspot",
            env={"HUBSPOT_ACCESS_TOKEN": token})
        runtime.destination("hubspot").setup(runtime.mapping("hubspot"))
        deliver(runtime, fresh())
        assert not [c for c in fake.calls if c[1] == "/account-info/v3/details"]
    (crm_id,) = [r["crm_id"] for r in runtime.store.deliveries_query()]
    assert f"https://app.hubspot.com/contacts/777/record/0-1/{crm_id}" in channel.bodies[0]["message"]


def test_a_notice_url_apprise_does_not_know_is_a_config_error_naming_the_route(tmp_path, database_url):
    with pytest.raises(ConfigError, match=r"routes\[0\]\.notify\.urls\[0\].*SALES_CHANNEL_URL.*not an alert URL"):
        setup(tmp_path, database_url, http_crm("http://127.0.0.1:9/leads"), "nonsense")


def test_an_http_record_url_without_the_id_is_a_config_error(tmp_path, database_url):
    crm = {**http_crm("http://127.0.0.1:9/leads"), "record_url": "https://crm.example.com/leads"}
    with pytest.raises(ConfigError, match=r"record_url.*\{id\}"):
        setup(tmp_path, database_url, crm, "json://127.0.0.1:9/x")


def test_notice_urls_are_redacted_like_secrets(tmp_path, database_url):
    runtime = setup(tmp_path, database_url, http_crm("http://127.0.0.1:9/leads"), "json://127.0.0.1:9/T0123456789NOTICEURL")
    assert "T0123456789NOTICEURL" not in runtime.redactor("posting to json://127.0.0.1:9/T0123456789NOTICEURL")


def test_the_speed_per_route_is_median_and_p90_of_the_last_24_hours(tmp_path, database_url, fake_crm):
    path = write_config(tmp_path, database_url, destinations={"crm": http_crm(fake_crm.url)},
                        routes=[{"source": "leaditio", "destination": "crm"}])
    config = load_config(path, env=ENV)
    store = Store(config.database.url)
    store.upgrade()
    runtime = Runtime(config, store)
    assert runtime.notifier is None  # no route asks for notices
    with serve(create_app(runtime)) as url:
        for index, seconds in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 1000]):
            post_webhook(url, leaditio_payload(lead_id=f"lead_{index}", delivered_at=ago(seconds)))
    Worker(runtime).drain(timeout=20)
    (route,) = store.speed_by_route()
    assert route.leads == 10
    assert 55 <= route.median < 55 + 60 and 90 <= route.p90 < 90 + 60 and route.slowest >= 1000
    assert store.speed_by_route(now=time.time() + 2 * 86400) == []  # older than the window
    assert len(store.speed_recent(limit=3)) == 3


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from([0.5, 0.9, 0.99]))
def test_the_nearest_rank_percentile_has_that_share_at_or_under_it(values, fraction):
    ordered = sorted(values)
    value = percentile(ordered, fraction)
    assert value in ordered
    assert sum(v <= value for v in ordered) >= fraction * len(ordered)
    assert sum(v < value for v in ordered) < fraction * len(ordered)


def test_worker_drain_sends_the_queued_notices_before_it_exits(tmp_path, database_url, fake_crm, channel,
                                                               monkeypatch):
    runtime = setup(tmp_path, database_url, http_crm(fake_crm.url), channel.url)
    with serve(create_app(runtime)) as url:
        post_webhook(url, fresh())
    monkeypatch.setenv("SALES_CHANNEL_URL", channel.url)
    cli_for(runtime.config.path)("worker", "--drain", "--timeout", "20")
    assert [b["title"] for b in channel.bodies] == ["New hot solar lead in crm: Sandton"]
