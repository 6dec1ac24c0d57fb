"""End to end: webhook events queued in the Store, drained by the Worker into a local Salesforce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.config import Config, load_config
from connector.intake import accept
from connector.runtime import Runtime
from connector.store import Store
from connector.worker import Worker
from fakes.salesforce import FakeSalesforce
from tests.conftest import ENV, leaditio_payload, write_config


@pytest.fixture
def setup(fake: FakeSalesforce, tmp_path: Path, database_url: str) -> Any:
    path = write_config(tmp_path, database_url, destinations={"salesforce": {
        "type": "salesforce", "mapping": "mappings/salesforce.yaml", "auth": "session",
        "session_id": "${SF_SESSION_ID}", "instance_url": fake.url}},
        routes=[{"source": "leaditio", "destination": "salesforce"}])
    config = load_config(path, env={**ENV, "SF_SESSION_ID": fake.new_session()})
    store = Store(config.database.url)
    store.upgrade()
    yield config, store
    store.dispose()


def queue(config: Config, store: Store, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    accept(config, store, Runtime(config).marketplaces["leaditio"].parse(body), body)


def deliveries(store: Store, state: str) -> list[dict[str, Any]]:
    return store.deliveries_query(state=state, destination="salesforce", limit=1000)


def test_queued_leads_land_as_leads_in_one_call_and_updates_respect_policies(
        fake: FakeSalesforce, setup: Any) -> None:
    config, store = setup
    for index in range(3):
        queue(config, store, leaditio_payload(f"lead_{index}", timestamp=f"2026-05-20T10:00:0{index}Z"))
    worker = Worker(Runtime(config, store))
    worker.drain(timeout=20)

    assert len(deliveries(store, "delivered")) == 3
    assert set(fake.leads()) == {"lead_0", "lead_1", "lead_2"}
    assert [c["path"].split("/v59.0/")[1] for c in fake.rest_calls()] == \
        ["composite/sobjects/Lead/Leaditio_Lead_ID__c"]

    crm_id = fake.leads()["lead_1"]["Id"]
    fake.records["Lead"][crm_id].update(Status="Working - Contacted", Email="rep.fixed@example.com")
    queue(config, store, leaditio_payload("lead_1", event="lead.updated", timestamp="2026-05-21T09:00:00Z",
                                          score=41, score_tier="qualified"))
    worker.drain(timeout=20)

    lead = fake.leads()["lead_1"]
    assert (lead["Status"], lead["Email"]) == ("Working - Contacted", "rep.fixed@example.com")
    assert (lead["Lead_Score__c"], lead["Rating"]) == (41, "Cold")
    assert len(fake.leads()) == 3
    worker.close()


def test_a_refused_lead_is_dead_lettered_with_salesforce_words(fake: FakeSalesforce, setup: Any) -> None:
    config, store = setup
    fake.duplicate_rule = "block"
    twin = fake.add_record("Lead", LastName="M", Company="C", Email="thabo.m@gmail.com")
    queue(config, store, leaditio_payload("lead_dup"))
    Worker(Runtime(config, store)).drain(timeout=20)

    dead, = deliveries(store, "dead")
    assert dead["last_error_code"] == "DUPLICATES_DETECTED"
    assert "Use one of these records?" in dead["last_error"] and twin in dead["last_error"]


def test_an_expired_session_pauses_the_destination_and_keeps_the_leads(fake: FakeSalesforce, setup: Any) -> None:
    config, store = setup
    fake.expire_sessions()
    queue(config, store, leaditio_payload("lead_wait"))
    Worker(Runtime(config, store)).drain(timeout=1)  # the lead stays paused, so drain waits out its whole timeout

    assert len(deliveries(store, "pending")) == 1 and deliveries(store, "dead") == []
    pause = store.pauses()["salesforce"]
    assert pause["kind"] == "config" and "INVALID_SESSION_ID" in pause["reason"]
