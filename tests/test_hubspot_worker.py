"""Webhook in, worker out to the fake HubSpot: the whole path, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.config import Config, load_config
from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED, PENDING
from connector.web import create_app
from connector.worker import Worker
from fakes.hubspot import FakeHubSpot, hubspot_server
from fakes.server import serve
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config


@pytest.fixture
def token() -> str:
    return f"pat-na1-{uuid.uuid4()}"


@pytest.fixture
def fake(token: str) -> Iterator[FakeHubSpot]:
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (fake, url, _ca):
        fake.url = url  # type: ignore[attr-defined]
        yield fake


def hubspot_config(tmp_path: Path, database_url: str, url: str, token: str, **settings: Any) -> Config:
    path = write_config(tmp_path, database_url, destinations={"hubspot": {
        "type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}",
        "host": url, "client_side_validation": True, **settings}},
        routes=[{"source": "leaditio", "destination": "hubspot"}])
    return load_config(path, env={**ENV, "HUBSPOT_ACCESS_TOKEN": token})


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str, fake: FakeHubSpot, token: str) -> Iterator[tuple[Config, Store, str]]:
    config = hubspot_config(tmp_path, database_url, fake.url, token)  # type: ignore[attr-defined]
    store = Store(config.database.url)
    store.upgrade()
    Runtime(config).destination("hubspot").setup(Runtime(config).mapping("hubspot"))
    with serve(create_app(Runtime(config, store))) as receiver:
        yield config, store, receiver
    store.dispose()


def states(store: Store) -> list[str]:
    return [r["state"] for r in sorted(store.deliveries_query(destination="hubspot", limit=1000), key=lambda r: r["id"])]


def test_leads_become_contacts_in_one_call_and_updates_keep_sales_changes(pipeline: Any, fake: FakeHubSpot) -> None:
    config, store, receiver = pipeline
    for n in range(30):
        payload = leaditio_payload(lead_id=f"lead_{n:03d}", timestamp=f"2026-05-20T10:{n:02d}:00Z")
        payload["contact"]["email"] = f"buyer{n}@example.com"
        assert post_webhook(receiver, payload).status_code == 200
    upserts = fake.count("/batch/upsert")
    Worker(Runtime(config, store)).drain(timeout=20)
    assert states(store) == [DELIVERED] * 30
    assert fake.count("/batch/upsert") - upserts == 1 and len(fake.contacts) == 30
    contact = fake.find("leaditio_lead_id", "leaditio:lead_007")
    assert contact["properties"]["email"] == "buyer7@example.com"
    assert store.lead_states("hubspot", ["leaditio:lead_007"])["leaditio:lead_007"][1] == contact["id"]

    contact["properties"]["lifecyclestage"] = "salesqualifiedlead"  # a rep moved it on
    update = leaditio_payload(lead_id="lead_007", event="lead.updated", timestamp="2026-05-21T09:00:00Z",
                              score=96, score_tier="hot")
    assert post_webhook(receiver, update).status_code == 200
    Worker(Runtime(config, store)).drain(timeout=20)
    assert len(fake.contacts) == 30
    assert contact["properties"]["leaditio_score"] == "96"
    assert contact["properties"]["lifecyclestage"] == "salesqualifiedlead"
    assert contact["properties"]["email"] == "buyer7@example.com"  # the update's email did not overwrite it


def test_lead_updated_events_settle_in_one_call_and_the_newest_data_wins(pipeline: Any, fake: FakeHubSpot) -> None:
    """Issue 16: 22 updates were once retried every 5 s for days. Now: one upsert, all delivered."""
    config, store, receiver = pipeline
    def payload(n: int, **kw: Any) -> dict[str, Any]:
        body = leaditio_payload(lead_id=f"lead_{n:03d}", **kw)
        body["contact"]["email"] = f"buyer{n}@example.com"
        return body

    for n in range(22):
        post_webhook(receiver, payload(n, timestamp="2026-05-20T10:00:00Z"))
    Worker(Runtime(config, store)).drain(timeout=20)
    for version, score in ((1, 60), (2, 70)):
        for n in range(22):
            post_webhook(receiver, payload(n, event="lead.updated", timestamp=f"2026-05-2{version}T10:00:00Z",
                                           score=score + n))
    upserts = fake.count("/batch/upsert")
    Worker(Runtime(config, store)).drain(timeout=20)
    assert states(store) == [DELIVERED] * 66
    assert fake.count("/batch/upsert") - upserts <= 2 and len(fake.contacts) == 22
    for n in range(22):
        contact = fake.find("leaditio_lead_id", f"leaditio:lead_{n:03d}")
        assert contact["properties"]["leaditio_score"] == str(70 + n)


def test_only_the_bad_lead_is_dead_lettered_with_hubspots_words(pipeline: Any, fake: FakeHubSpot) -> None:
    config, store, receiver = pipeline
    for n in range(3):
        payload = leaditio_payload(lead_id=f"lead_{n}", timestamp=f"2026-05-20T10:0{n}:00Z")
        payload["contact"]["email"] = "not-an-email" if n == 1 else f"ok{n}@example.com"
        post_webhook(receiver, payload)
    Worker(Runtime(config, store)).drain(timeout=20)
    assert states(store) == [DELIVERED, DEAD, DELIVERED]
    dead = store.deliveries_query(state=DEAD)[0]
    assert dead["last_error_code"] == "INVALID_EMAIL" and "Email address not-an-email is invalid" in dead["last_error"]


def test_a_revoked_token_pauses_the_destination_and_loses_nothing(pipeline: Any, fake: FakeHubSpot,
                                                                  token: str) -> None:
    config, store, receiver = pipeline
    post_webhook(receiver, leaditio_payload())
    fake.revoke(token)
    Worker(Runtime(config, store)).run_once("hubspot")
    assert states(store) == [PENDING]
    pause = store.status()["pauses"]["hubspot"]
    assert pause["kind"] == "config" and "expired" in pause["reason"]
    row = store.deliveries_query(destination="hubspot")[0]
    assert row["attempts"] == 0  # a config problem is not the lead's attempt


def test_the_daily_limit_pauses_until_midnight_without_dead_letters(tmp_path: Path, database_url: str,
                                                                    token: str) -> None:
    with hubspot_server(FakeHubSpot(tokens=(token,), daily_limit=0)) as (fake, url, _ca):
        config = hubspot_config(tmp_path, database_url, url, token, id_property="email")
        store = Store(config.database.url)
        store.upgrade()
        with serve(create_app(Runtime(config, store))) as receiver:
            post_webhook(receiver, leaditio_payload())
        worker = Worker(Runtime(config, store))
        worker.run_once("hubspot")
        pause = store.status()["pauses"]["hubspot"]
        assert pause["kind"] == "rate_limit" and "daily" in pause["reason"]
        assert states(store) == [PENDING]
        assert fake.rate_limited == 1
        assert 0 < pause["until"] - time.time() <= 86_400 + 3600  # until the account's midnight
        store.dispose()


def test_a_spent_budget_rests_the_worker_and_gives_leads_back_without_an_attempt(
        tmp_path: Path, database_url: str, token: str) -> None:
    # HubSpot allows one request per 0.5 s window: the second lead finds the budget spent, waits untouched,
    # then goes. Setup uses a token of its own (HubSpot's window is per token, the properties per account).
    setup_token = f"pat-na1-{uuid.uuid4()}"
    with hubspot_server(FakeHubSpot(tokens=(token, setup_token), max_per_interval=1, interval_ms=500)) as (
            fake, url, _ca):
        setup_config = hubspot_config(tmp_path, database_url, url, setup_token, requests_per_10s=1,
                                      rate_window=0.5, batch_size=1)
        store = Store(setup_config.database.url)
        store.upgrade()
        Runtime(setup_config, store).destination("hubspot").setup(Runtime(setup_config).mapping("hubspot"))
        config = hubspot_config(tmp_path, database_url, url, token, requests_per_10s=1, rate_window=0.5,
                                batch_size=1)
        with serve(create_app(Runtime(config, store))) as receiver:
            for n in range(3):
                payload = leaditio_payload(lead_id=f"lead_{n:03d}")
                payload["contact"]["email"] = f"buyer{n}@example.com"
                assert post_webhook(receiver, payload).status_code == 200
        upserts = fake.count("/batch/upsert")
        started = time.monotonic()
        Worker(Runtime(config, store)).drain(timeout=20)
        elapsed = time.monotonic() - started
        rows = store.deliveries_query(destination="hubspot", limit=10)
        store.dispose()
    assert [r["state"] for r in rows] == [DELIVERED] * 3
    assert all(r["attempts"] <= 1 for r in rows)  # resting for the budget is not an attempt
    assert fake.count("/batch/upsert") - upserts == 3 and fake.rate_limited == 0
    assert elapsed >= 0.9  # three requests at one per 0.5 s window
