"""The HTTP destination's promises, through `requests` over real HTTP(S) against the fake CRM: a batch goes
out concurrently (bounded), one slow answer stalls only its own lead, verdicts stay one per lead; records
are addressed by URL templates (any lead key or CRM id round-trips); what it sends verifies with the
published Standard Webhooks library; template mistakes are config errors with file, line and key."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connector.config import load_config
from connector.destinations.http import HttpDestination, Settings, webhook_id
from connector.errors import ConfigError, ConfigProblem, Permanent, RateLimited, Retryable
from connector.records import OutboundRecord
from connector.runtime import Runtime, check_settings
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED, PENDING
from connector.web import create_app
from connector.worker import Worker
from fakes.http_crm import FakeCrm
from fakes.server import serve
from fakes.tls import FakeCA
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config

WHSEC = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def record(n: int, lead_key: str | None = None, crm_id: str | None = None, **values: Any) -> OutboundRecord:
    return OutboundRecord(delivery_id=n, lead_key=lead_key or f"leaditio:lead_{n}", event_type="lead.new",
                          values={"n": n, **values}, policies={}, known=crm_id is not None, crm_id=crm_id)


def destination(**settings: Any) -> HttpDestination:
    return HttpDestination("crm", Settings.model_validate(settings))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeCA, str]:
    ca = FakeCA()
    return ca, ca.write_bundle(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def crm(tls: tuple[FakeCA, str]) -> Any:
    """The fake CRM over HTTPS; `crm.url` is its root, `crm.ca_bundle` the CA the client must trust."""
    fake = FakeCrm()
    with serve(fake.app, tls=tls[0]) as url:
        fake.url, fake.ca_bundle = url, tls[1]
        yield fake


# --- concurrency ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_slow_answer_does_not_stall_the_other_nineteen(crm: Any) -> None:
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, concurrency=8)
    records = [record(n) for n in range(1, 21)]
    crm.slow["leaditio:lead_1"] = 5.0
    start = time.monotonic()
    try:
        outcomes = dest.send(records)
    finally:
        dest.close()
    took = time.monotonic() - start
    others = [crm.written_at[r.lead_key] - start for r in records[1:]]
    assert len(others) == 19 and max(others) < 2.0, others  # all in while the slow one still sleeps
    assert crm.written_at["leaditio:lead_1"] - start >= 5.0
    assert 5.0 <= took < 7.0
    assert [o.delivery_id for o in outcomes] == list(range(1, 21)) and all(o.ok for o in outcomes)
    assert [o.crm_id for o in outcomes] == [f"crm-{r.lead_key}" for r in records]


def test_requests_in_flight_are_bounded_by_concurrency(crm: Any) -> None:
    crm.delay = 0.15
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, concurrency=4)
    start = time.monotonic()
    try:
        outcomes = dest.send([record(n) for n in range(1, 13)])
    finally:
        dest.close()
    assert all(o.ok for o in outcomes) and len(crm.records) == 12
    assert crm.peak == 4  # never more than asked, and the bound is used
    assert time.monotonic() - start < 12 * 0.15  # well under one at a time


def test_concurrency_one_sends_one_at_a_time(crm: Any) -> None:
    crm.delay = 0.05
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, concurrency=1)
    try:
        assert all(o.ok for o in dest.send([record(n) for n in range(1, 6)]))
    finally:
        dest.close()
    assert crm.peak == 1


def test_each_lead_of_a_concurrent_batch_gets_its_own_classified_outcome(crm: Any) -> None:
    crm.fail_for("leaditio:lead_2", 503)
    crm.fail_for("leaditio:lead_3", 429, headers={"Retry-After": "120"})
    crm.fail_for("leaditio:lead_4", 422, body={"code": "invalid_field", "message": "suburb is not allowed"})
    crm.fail_for("leaditio:lead_5", 401, body={"code": "unauthorized", "message": "bad token"})
    crm.slow["leaditio:lead_1"] = 0.3  # answers last, still first in the outcomes
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle)
    try:
        outcomes = dest.send([record(n) for n in range(1, 21)])
    finally:
        dest.close()
    assert [o.delivery_id for o in outcomes] == list(range(1, 21))
    kinds = {o.delivery_id: type(o.error) for o in outcomes if o.error}
    assert kinds == {2: Retryable, 3: RateLimited, 4: Permanent, 5: ConfigProblem}
    assert outcomes[2].error.retry_after == 120
    assert "suburb is not allowed" in outcomes[3].error.message
    assert sum(o.ok for o in outcomes) == 16


def test_the_worker_settles_one_verdict_per_lead_of_a_concurrent_batch(tmp_path: Path, database_url: str,
                                                                       fake_crm: FakeCrm) -> None:
    config = load_config(write_config(tmp_path, database_url, destinations={"crm": {
        "type": "http", "url": fake_crm.url, "concurrency": 8, "mapping": "mappings/file.yaml"}},
        routes=[{"source": "leaditio", "destination": "crm"}]), env=ENV)
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        for n in range(20):
            post_webhook(url, leaditio_payload(lead_id=f"lead_{n}"))
    fake_crm.fail_for("leaditio:lead_1", 503)
    fake_crm.fail_for("leaditio:lead_2", 429, headers={"Retry-After": "120"})
    fake_crm.fail_for("leaditio:lead_3", 422, body={"code": "invalid_field", "message": "suburb is not allowed"})
    fake_crm.slow["leaditio:lead_0"] = 0.5
    Worker(Runtime(config, store)).run_once("crm")
    rows = {r["lead_key"]: r for r in store.deliveries_query(limit=100)}
    assert len(rows) == 20 and fake_crm.peak > 1
    assert rows["leaditio:lead_1"]["state"] == PENDING and rows["leaditio:lead_1"]["attempts"] == 1
    assert rows["leaditio:lead_2"]["state"] == PENDING
    assert 110 < rows["leaditio:lead_2"]["next_attempt_at"] - time.time() <= 121  # Retry-After honoured
    assert rows["leaditio:lead_3"]["state"] == DEAD and "suburb is not allowed" in rows["leaditio:lead_3"]["last_error"]
    delivered = [k for k, r in rows.items() if r["state"] == DELIVERED]
    assert len(delivered) == 17 and all(rows[k]["crm_id"] == f"crm-{k}" for k in delivered)
    store.dispose()


# --- addressing a record ----------------------------------------------------------------------------

def test_a_lead_is_created_then_updated_at_the_url_of_the_crm_id_it_answered(tmp_path: Path, database_url: str,
                                                                             fake_crm: FakeCrm) -> None:
    root = fake_crm.url  # .../leads
    config = load_config(write_config(tmp_path, database_url, destinations={"crm": {
        "type": "http", "create": {"method": "POST", "url": root},
        "update": {"method": "PATCH", "url": root + "/{crm_id}"}, "id_field": "id",
        "mapping": "mappings/file.yaml"}}, routes=[{"source": "leaditio", "destination": "crm"}]), env=ENV)
    store = Store(config.database.url)
    store.upgrade()
    worker = Worker(Runtime(config, store))
    with serve(create_app(Runtime(config, store))) as url:
        post_webhook(url, leaditio_payload(timestamp="2026-05-20T10:00:00Z", score=50))
        worker.drain(timeout=10)
        post_webhook(url, leaditio_payload(event="lead.updated", timestamp="2026-05-20T11:00:00Z", score=90))
        worker.drain(timeout=10)
    first, second = fake_crm.requests
    assert (first["method"], first["address"]) == ("POST", None)
    assert (second["method"], second["address"]) == ("PATCH", "crm-leaditio:lead_abc123")
    assert fake_crm.records["leaditio:lead_abc123"]["score"] == 90
    assert fake_crm.creates["leaditio:lead_abc123"] == 1
    assert [r["crm_id"] for r in store.deliveries_query()] == ["crm-leaditio:lead_abc123"] * 2
    store.dispose()


def test_the_crm_id_is_read_from_the_configured_json_path(crm: Any) -> None:
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, id_field="created")
    try:
        [outcome] = dest.send([record(1)])
        [missing] = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, id_field="data.id").send([record(2)])
    finally:
        dest.close()
    assert outcome.crm_id == "True"  # the fake answers {"id": ..., "created": true}
    assert missing.ok and missing.crm_id is None  # no such path in the answer: no id, still delivered


KEYS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@pytest.mark.slow
def test_any_lead_key_and_crm_id_is_percent_encoded_and_round_trips(crm: Any) -> None:
    """Slashes, spaces, `?`, `#`, `%`, braces, unicode: each reaches the fake as the one path segment
    it was; only a value of nothing but dots (a `.`/`..` path step) is refused, as a permanent error."""
    by_key = destination(method="PUT", url=f"{crm.url}/leads/{{lead_key}}?src=connector", ca_bundle=crm.ca_bundle)
    by_id = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle,
                        update={"method": "PATCH", "url": f"{crm.url}/leads/{{crm_id}}"})

    deliveries = iter(range(1, 10_000))  # a new delivery each time: a replayed Idempotency-Key writes nothing

    @settings(max_examples=60, deadline=None)
    @given(lead_key=KEYS, crm_id=KEYS)
    def check(lead_key: str, crm_id: str) -> None:
        sent = len(crm.requests)
        [put] = by_key.send([record(next(deliveries), lead_key=lead_key, body=lead_key)])
        if lead_key.strip(".") == "":
            assert isinstance(put.error, Permanent) and len(crm.requests) == sent
        else:
            assert put.ok, put.error
            assert crm.requests[-1]["address"] == lead_key and crm.records[lead_key]["body"] == lead_key
        crm.ids[crm_id] = "existing"
        crm.records["existing"] = {}
        [patch] = by_id.send([record(next(deliveries), lead_key="leaditio:x", crm_id=crm_id, body=crm_id)])
        if crm_id.strip(".") == "":
            assert isinstance(patch.error, Permanent) and patch.error.code == "unaddressable"
        else:
            assert patch.ok, patch.error
            assert crm.requests[-1]["method"] == "PATCH" and crm.requests[-1]["address"] == crm_id
            assert crm.records["existing"]["body"] == crm_id

    try:
        check()
    finally:
        by_key.close()
        by_id.close()


def test_a_lead_key_outside_ascii_reaches_the_crm_percent_encoded_in_x_lead_key(crm: Any) -> None:
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle)
    try:
        [outcome] = dest.send([record(1, lead_key="leaditio:Nomsa Dlamini-Ndlovu 中 100%")])
    finally:
        dest.close()
    assert outcome.ok
    assert crm.requests[0]["headers"]["X-Lead-Key"] == "leaditio:Nomsa%20Dlamini-Ndlovu%20%E4%B8%AD%20100%25"
    assert "leaditio:Nomsa Dlamini-Ndlovu 中 100%" in crm.records
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle)
    try:
        dest.send([record(2, lead_key="leaditio:lead_abc123")])
    finally:
        dest.close()
    assert crm.requests[1]["headers"]["X-Lead-Key"] == "leaditio:lead_abc123"  # plain keys as before


# --- Standard Webhooks signatures ---------------------------------------------------------------------

def test_what_is_sent_verifies_with_the_standard_webhooks_library(crm: Any) -> None:
    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, signing_secret=WHSEC)
    try:
        dest.send([record(7, first_name="Thandi")])
        crm.fail_next(503)
        dest.send([record(8)])
        dest.send([record(8)])  # the retry of delivery 8
        dest.send([record(8, phone="+27823456789")])  # delivery 8 again after a mapping fix: a new body
    finally:
        dest.close()
    first, failed, retried, changed = crm.requests
    for sent in crm.requests:
        assert Webhook(WHSEC).verify(sent["body"], sent["headers"]) == yaml.safe_load(sent["body"])
        assert "Idempotency-Key" in sent["headers"] and "X-Connector-Signature" not in sent["headers"]
    assert first["headers"]["Webhook-Id"] == webhook_id(7, first["body"]) and "." not in first["headers"]["Webhook-Id"]
    assert failed["headers"]["Webhook-Id"] == retried["headers"]["Webhook-Id"]  # stable across retries
    assert failed["headers"]["Idempotency-Key"] == retried["headers"]["Idempotency-Key"]
    assert changed["headers"]["Webhook-Id"] != retried["headers"]["Webhook-Id"]
    assert abs(int(first["headers"]["Webhook-Timestamp"]) - time.time()) < 5
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(first["body"], first["headers"])
    tampered = first["body"].replace(b"Thandi", b"Thandy")
    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(tampered, first["headers"])


def test_a_secret_without_whsec_keeps_the_hex_signature(crm: Any) -> None:
    import hashlib
    import hmac

    dest = destination(url=f"{crm.url}/leads", ca_bundle=crm.ca_bundle, signing_secret="s3cret-for-hex")
    try:
        dest.send([record(1)])
    finally:
        dest.close()
    [sent] = crm.requests
    expected = hmac.new(b"s3cret-for-hex", sent["body"], hashlib.sha256).hexdigest()
    assert sent["headers"]["X-Connector-Signature"] == expected and "Webhook-Signature" not in sent["headers"]


# --- config mistakes ----------------------------------------------------------------------------------

def config_error(tmp_path: Path, crm: dict[str, Any], env: dict[str, str] | None = None) -> str:
    path = write_config(tmp_path, "sqlite:///connector.db", destinations={"crm": {
        "type": "http", **crm, "mapping": "mappings/file.yaml"}}, routes=[{"source": "leaditio", "destination": "crm"}])
    with pytest.raises(ConfigError) as caught:
        check_settings(load_config(path, env={**ENV, **(env or {})}))
    return str(caught.value)


def line_of(tmp_path: Path, key: str) -> int:
    """The line of destinations.crm.<key> in the written file, or of the nearest key above it there."""
    lines = (tmp_path / "config.yaml").read_text().splitlines()
    found = next(n for n, line in enumerate(lines) if line.strip() == "crm:")
    for part in key.split("."):
        found = next((n for n in range(found + 1, len(lines)) if lines[n].strip().startswith(f"{part}:")), found)
    return found + 1


@pytest.mark.parametrize(("crm", "key", "expected"), [
    ({"url": "https://crm.example/leads/{lead_kye}"}, "url", "unknown placeholder {lead_kye} in the URL "
     "template (known: {lead_key})"),
    ({"url": "https://crm.example/leads/{lead_key"}, "url", "expected '}' before end of string"),
    ({"url": "https://crm.example/leads/lead_key}"}, "url", "Single '}' encountered"),
    ({"url": "https://crm.example/leads/{crm_id}"}, "url", "{crm_id} is unknown until the CRM has answered"),
    ({"url": "https://{lead_key}.crm.example/leads"}, "url", "placeholders go in the URL's path or query"),
    ({"url": "crm.example/leads"}, "url", "the URL must start with http:// or https://"),
    ({"create": {"method": "POST", "url": "https://crm.example/leads"},
      "update": {"method": "PATCH", "url": "https://crm.example/leads/{crmid}"}}, "update.url",
     "unknown placeholder {crmid} in the URL template (known: {lead_key}, {crm_id})"),
    ({"create": {"method": "POST", "url": "https://crm.example/leads/{crm_id}"}}, "create.url",
     "{crm_id} is unknown until the CRM has answered"),
    ({"update": {"method": "PATCH", "url": "https://crm.example/leads/{crm_id}"}}, "create",
     "give url (with method), or create"),
    ({"url": "https://crm.example/leads", "create": {"method": "POST", "url": "https://crm.example/leads"}},
     "create", "give either url (with method) or create, not both"),
    ({"url": "https://crm.example/leads", "update": {"url": "https://crm.example/leads/{crm_id}"}},
     "update.method", "is required but missing"),
    ({"url": "https://crm.example/leads", "id_field": "data..id"}, "id_field", "a dotted path"),
    ({"url": "https://crm.example/leads", "concurrency": 0}, "concurrency", "Input should be greater than or equal to 1"),
])
def test_template_mistakes_name_file_line_and_key(tmp_path: Path, crm: dict[str, Any], key: str,
                                                 expected: str) -> None:
    message = config_error(tmp_path, crm)
    assert f"config.yaml:{line_of(tmp_path, key)}: destinations.crm.{key}: {expected}" in message, message


@pytest.mark.parametrize(("secret", "expected"), [
    ("whsec_" + base64.b64encode(b"too short").decode(), "holds 24 to 64 bytes (Standard Webhooks); this one holds 9"),
    ("whsec_not*base64*at*all*but*long*enough", "not valid base64"),
])
def test_a_bad_whsec_secret_is_a_config_error_that_never_prints_it(tmp_path: Path, secret: str,
                                                                    expected: str) -> None:
    message = config_error(tmp_path, {"url": "https://crm.example/leads", "signing_secret": "${CRM_WEBHOOK_SECRET}"},
                           env={"CRM_WEBHOOK_SECRET": secret})
    assert "destinations.crm.signing_secret: a whsec_ secret" in message and expected in message
    assert secret not in message and secret[6:] not in message
