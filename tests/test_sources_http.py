"""LeadOS and LeadNod end to end, over real HTTP everywhere.

The marketplace fakes register our webhook (through `connector webhooks register`), sign and post
events to the real Flask receiver; the worker maps them with the default mappings and delivers them
to a local Salesforce (LeadOS) and a generic HTTP CRM (LeadNod); LeadOS backfill goes through the
backfill engine into the same queue without duplicating what webhooks brought.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from connector.backfill import Backfill, Job
from connector.cli import main
from connector.config import Config, load_config
from connector.runtime import Runtime
from connector.store import Store
from connector.web import create_app
from connector.worker import Worker
from fakes.http_crm import FakeCrm
from fakes.leadnod_api import FakeLeadNod
from fakes.leados_api import FakeLeadOS, make_lead
from fakes.salesforce import FakeSalesforce, _field, running, trust
from fakes.server import serve
from tests.conftest import write_config

NEW, OLD = "whsec_current_0001", "whsec_previous_0001"
LEADNOD_ROUTED = ["engagement.created", "engagement.started", "engagement.completed", "engagement.terminated",
                  "opportunity.created", "opportunity.updated", "opportunity.closed", "opportunity.matched"]


def leados_custom_fields() -> list[dict[str, Any]]:
    """The LeadOS fields the README tells a Salesforce admin to create on Lead."""
    return [
        _field("LeadOS_Id__c", "string", length=64, external_id=True, unique=True, custom=True),
        _field("LeadOS_Geography__c", "string", length=255, custom=True),
        _field("LeadOS_Score__c", "double", custom=True),
        _field("LeadOS_Email_Status__c", "string", length=40, custom=True),
        _field("LeadOS_LinkedIn_URL__c", "url", length=255, custom=True),
        _field("LeadOS_Company_Size__c", "string", length=40, custom=True),
        _field("LeadOS_Campaign_Id__c", "string", length=64, custom=True),
        _field("LeadOS_Enrichment_Level__c", "string", length=40, custom=True),
        _field("LeadOS_Credits__c", "double", custom=True),
        _field("LeadOS_Delivered_At__c", "datetime", custom=True),
    ]


class World:
    """Everything one test talks to, and the config that ties it together."""

    def __init__(self, config: Config, store: Store, env: dict[str, str], receiver: str, leados: FakeLeadOS,
                 leadnod: FakeLeadNod, salesforce: FakeSalesforce, crm: FakeCrm):
        self.config, self.store, self.env, self.receiver = config, store, env, receiver
        self.leados, self.leadnod, self.salesforce, self.crm = leados, leadnod, salesforce, crm

    def cli(self, *args: str) -> Any:
        result = CliRunner().invoke(main, ["--config", str(self.config.path), *args], env=self.env,
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    def drain(self) -> None:
        worker = Worker(Runtime(self.config, self.store))
        try:
            worker.drain(timeout=30)
        finally:
            worker.close()


@pytest.fixture
def world(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    leados = FakeLeadOS(23, paging="page", api_key="ldo_live_sk_e2e")
    leadnod = FakeLeadNod(client_id="cli_e2e_" + tmp_path.name[-12:], client_secret="cs_e2e")
    crm = FakeCrm()
    with running() as salesforce, leados.running(), leadnod.running(), serve(crm.app) as crm_url:
        trust(monkeypatch, salesforce, tmp_path)
        salesforce.objects["Lead"] += leados_custom_fields()
        env = {"LEADOS_WEBHOOK_SECRET": NEW, "LEADOS_WEBHOOK_SECRET_PREVIOUS": OLD, "LEADOS_API_KEY": leados.api_key,
               "LEADNOD_WEBHOOK_SECRET": NEW, "LEADNOD_CLIENT_ID": leadnod.client_id,
               "LEADNOD_CLIENT_SECRET": leadnod.client_secret, "SF_SESSION_ID": salesforce.new_session(),
               "REQUESTS_CA_BUNDLE": str(tmp_path / "fake-salesforce-ca.pem")}
        path = write_config(
            tmp_path, database_url,
            sources={
                "leados": {"marketplace": "leados",
                           "secrets": ["${LEADOS_WEBHOOK_SECRET}", "${LEADOS_WEBHOOK_SECRET_PREVIOUS:-}"],
                           "api": {"base_url": leados.url, "api_key": "${LEADOS_API_KEY}", "backoff": 0.01}},
                "leadnod": {"marketplace": "leadnod", "secrets": ["${LEADNOD_WEBHOOK_SECRET}"],
                            "events": LEADNOD_ROUTED,
                            "api": {"base_url": leadnod.url, "client_id": "${LEADNOD_CLIENT_ID}",
                                    "client_secret": "${LEADNOD_CLIENT_SECRET}", "backoff": 0.01}},
            },
            destinations={
                "salesforce": {"type": "salesforce", "mapping": "mappings/leados_salesforce.yaml", "auth": "session",
                               "session_id": "${SF_SESSION_ID}", "instance_url": salesforce.url,
                               "external_id_field": "LeadOS_Id__c"},
                "crm": {"type": "http", "url": f"{crm_url}/leads", "mapping": "mappings/leadnod_http.yaml"},
            },
            routes=[{"source": "leados", "destination": "salesforce"},
                    {"source": "leadnod", "destination": "crm", "events": LEADNOD_ROUTED}])
        config = load_config(path, env=env)
        store = Store(config.database.url)
        store.upgrade()
        with serve(create_app(Runtime(config, store))) as receiver:
            yield World(config, store, env, receiver, leados, leadnod, salesforce, crm)
        store.dispose()


def post(world: World, source: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{world.receiver}/webhooks/{source}", data=body, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- signatures through the receiver ------------------------------------------------------------
LEADOS_BODY = json.dumps({"event": "lead.delivered", "delivery_id": "del_sig", "lead": make_lead(7)}).encode()
LEADNOD_BODY = json.dumps({"id": "evt_sig", "type": "engagement.created", "created": "2026-05-01T08:00:00Z",
                           "data": {"engagement_id": "eng_sig", "status": "pending"}}).encode()
CASES = {
    # name: (source, header, body, signature) -> expected status
    "leados valid": ("leados", "X-LeadOS-Signature", LEADOS_BODY, "sha256=" + hex_hmac(NEW, LEADOS_BODY), 200),
    "leados previous secret": ("leados", "X-LeadOS-Signature", LEADOS_BODY, "sha256=" + hex_hmac(OLD, LEADOS_BODY),
                               200),
    "leados header name in lower case": ("leados", "x-leados-signature", LEADOS_BODY,
                                         "sha256=" + hex_hmac(NEW, LEADOS_BODY), 200),
    "leados without sha256= prefix": ("leados", "X-LeadOS-Signature", LEADOS_BODY, hex_hmac(NEW, LEADOS_BODY), 401),
    "leados sha1= prefix": ("leados", "X-LeadOS-Signature", LEADOS_BODY, "sha1=" + hex_hmac(NEW, LEADOS_BODY), 401),
    "leados wrong secret": ("leados", "X-LeadOS-Signature", LEADOS_BODY, "sha256=" + hex_hmac("x", LEADOS_BODY),
                            401),
    "leados tampered body": ("leados", "X-LeadOS-Signature", LEADOS_BODY.replace(b"del_sig", b"del_sid"),
                             "sha256=" + hex_hmac(NEW, LEADOS_BODY), 401),
    "leados missing header": ("leados", "X-Other", LEADOS_BODY, "sha256=" + hex_hmac(NEW, LEADOS_BODY), 401),
    "leadnod valid": ("leadnod", "X-LeadNod-Signature", LEADNOD_BODY, hex_hmac(NEW, LEADNOD_BODY), 200),
    "leadnod with a sha256= prefix": ("leadnod", "X-LeadNod-Signature", LEADNOD_BODY,
                                      "sha256=" + hex_hmac(NEW, LEADNOD_BODY), 401),
    "leadnod old secret not configured": ("leadnod", "X-LeadNod-Signature", LEADNOD_BODY,
                                          hex_hmac(OLD, LEADNOD_BODY), 401),
    "leadnod tampered body": ("leadnod", "X-LeadNod-Signature", LEADNOD_BODY.replace(b"pending", b"active"),
                              hex_hmac(NEW, LEADNOD_BODY), 401),
    "leadnod missing header": ("leadnod", "X-Other", LEADNOD_BODY, hex_hmac(NEW, LEADNOD_BODY), 401),
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_signatures_through_the_receiver(world: World) -> None:
    for name, (source, header, body, signature, status) in CASES.items():
        answer = post(world, source, body, {header: signature})
        assert answer.status_code == status, name
        if status == 401:
            expected = "missing" if header == "X-Other" else "invalid"
            assert answer.json()["code"] == "unauthorized" and answer.json()["message"].startswith(expected), name
        else:
            assert answer.json()["status"] in ("accepted", "duplicate"), name


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_send_test_and_preview_speak_each_marketplace(world: World) -> None:
    for source in ("leados", "leadnod"):
        out = world.cli("send-test", "--url", world.receiver, "--source", source).output
        assert "HTTP 200" in out and '"accepted"' in out, out
    record = json.loads(world.cli("mappings", "preview", "-d", "salesforce", "-s", "leados").output)["record"]
    assert (record["FirstName"], record["LastName"], record["Company"]) == \
        ("Naledi", "Dlamini", "Karoo Logistics (Pty) Ltd")
    record = json.loads(world.cli("mappings", "preview", "-d", "crm", "-s", "leadnod").output)["record"]
    assert record["record_type"] == "engagement" and record["status"] == "pending"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unreadable_events_are_400_and_undocumented_ones_are_kept_not_delivered(world: World) -> None:
    body = json.dumps({"event": "lead.delivered", "delivery_id": "del_x"}).encode()
    answer = post(world, "leados", body, {"X-LeadOS-Signature": "sha256=" + hex_hmac(NEW, body)})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
    body = json.dumps({"id": "evt_new", "type": "invoice.paid", "data": {"invoice_id": "inv_1"}}).encode()
    answer = post(world, "leadnod", body, {"X-LeadNod-Signature": hex_hmac(NEW, body)})
    assert answer.status_code == 200 and answer.json()["status"] == "ignored" and answer.json()["deliveries"] == 0


# --- LeadOS: register, webhook, Salesforce, backfill ----------------------------------------------
def test_leados_webhook_to_salesforce_and_backfill_without_duplicates(world: World) -> None:
    out = world.cli("webhooks", "register", "--source", "leados", "--url", world.receiver).output
    assert "registered" in out
    hook = world.leados.webhooks[0]
    assert (hook["url"], hook["secret"], hook["events"]) == \
        (f"{world.receiver}/webhooks/leados", NEW, ["lead.delivered"])

    first = world.leados.leads[0]
    answer = world.leados.deliver(first)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted" and answer.json()["deliveries"] == 1
    assert world.leados.deliver(first).json()["status"] == "duplicate"  # LeadOS retried: stored once
    world.drain()

    lead = world.salesforce.leads("LeadOS_Id__c")["del_00000"]
    assert (lead["FirstName"], lead["LastName"], lead["Company"], lead["Title"]) == \
        ("Raj", "Sharma", "Company 0 (Pty) Ltd", "Founder")
    assert (lead["Email"], lead["Phone"], lead["Website"], lead["LeadSource"]) == \
        ("person0@company0.co.za", "+27820000000", "company0.co.za", "Purchased List")
    assert (lead["LeadOS_Score__c"], lead["LeadOS_Credits__c"], lead["LeadOS_Geography__c"]) == \
        (50, 1, "Cape Town, South Africa")

    api = Runtime(world.config).marketplaces["leados"].api()
    result = Backfill(Runtime(world.config, world.store), Job("leados"), api).run()
    api.close()
    assert result.ok and result.done
    assert (result.counts.listed, result.counts.already_present, result.counts.enqueued) == (23, 1, 22)
    assert result.counts.fetched == 22 and world.leados.requests["GET /v1/leads"] == 2  # 1 page + the empty one
    world.drain()
    leads = world.salesforce.leads("LeadOS_Id__c")
    assert sorted(leads) == [f"del_{n:05d}" for n in range(23)]
    assert leads["del_00004"]["LastName"] == "Sipho" and "FirstName" not in leads["del_00004"]  # one-word name
    assert (leads["del_00005"]["FirstName"], leads["del_00005"]["LastName"]) == ("Anri", "Botha")  # "Botha, Anri"

    again = Backfill(Runtime(world.config, world.store), Job("leados"), Runtime(world.config).marketplaces["leados"].api()).run(
        restart=True)
    assert (again.counts.already_present, again.counts.enqueued) == (23, 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_leados_mapping_checks_clean_against_salesforce(world: World) -> None:
    """With the documented custom fields in place, Salesforce finds nothing wrong with the default mapping."""
    result = CliRunner().invoke(main, ["--config", str(world.config.path), "mappings", "check", "--against-crm"],
                                env=world.env)
    lines = [line for line in result.output.splitlines() if line.strip()]
    salesforce = [line for line in lines if "leados_salesforce.yaml" in line]
    assert salesforce and salesforce[0].lstrip().startswith("✓"), result.output
    # The only complaint is that an HTTP CRM cannot be asked about fields.
    assert [line for line in lines if line.strip().startswith("-")] == \
        ["    - http destinations cannot be checked against a CRM"], result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_leados_mapping_check_names_a_missing_custom_field(world: World) -> None:
    world.salesforce.objects["Lead"] = [f for f in world.salesforce.objects["Lead"]
                                        if f["name"] != "LeadOS_Credits__c"]
    result = CliRunner().invoke(main, ["--config", str(world.config.path), "mappings", "check", "--against-crm"],
                                env=world.env)
    assert result.exit_code != 0 and "LeadOS_Credits__c" in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_leados_stats_command(world: World) -> None:
    out = world.cli("stats", "--source", "leados", "--json").output
    stats = json.loads(out)
    assert stats["balance"]["credits_remaining"] == 480
    assert sum(day["delivered"] for day in stats["deliveries"]["days"]) == 23


# --- LeadNod: register, events routed by type to the HTTP CRM --------------------------------------
def test_leadnod_events_are_routed_by_type_to_the_http_crm(world: World) -> None:
    world.cli("webhooks", "register", "--source", "leadnod", "--url", world.receiver)
    hook = world.leadnod.webhooks[0]
    assert (hook["url"], hook["secret"], hook["events"]) == \
        (f"{world.receiver}/webhooks/leadnod", NEW, LEADNOD_ROUTED)
    assert world.leadnod.tokens_issued == 1

    sent = [
        world.leadnod.deliver("engagement.created", {"engagement_id": "eng_1", "client_id": "usr_c",
                                                     "sales_pro_id": "usr_p", "status": "pending"}, event_id="evt_1"),
        world.leadnod.deliver("opportunity.created", {"opportunity_id": "opp_1", "client_id": "usr_c",
                                                      "title": "Enterprise AE", "commission_rate": 0.1,
                                                      "base_salary_range": {"min": 80000, "max": 120000}},
                              event_id="evt_2"),
        world.leadnod.deliver("user.updated", {"id": "usr_c", "name": "John Smith"}, event_id="evt_3"),
    ]
    assert [r.json()["deliveries"] for r in sent] == [1, 1, 0]  # no route takes user events
    assert world.leadnod.deliver("engagement.created", {"engagement_id": "eng_1"}, event_id="evt_1") \
        .json()["status"] == "duplicate"
    world.drain()
    assert set(world.crm.records) == {"leadnod:eng_1", "leadnod:opp_1"}
    engagement = world.crm.records["leadnod:eng_1"]
    assert (engagement["external_id"], engagement["record_type"], engagement["status"], engagement["last_event"]) == \
        ("eng_1", "engagement", "pending", "engagement.created")
    opportunity = world.crm.records["leadnod:opp_1"]
    assert (opportunity["base_salary_min"], opportunity["base_salary_max"], opportunity["commission_rate"]) == \
        (80000, 120000, 0.1)

    world.leadnod.deliver("engagement.completed", {"engagement_id": "eng_1", "status": "completed"}, event_id="evt_4")
    world.drain()
    engagement = world.crm.records["leadnod:eng_1"]
    assert (engagement["status"], engagement["last_event"], engagement["last_event_id"]) == \
        ("completed", "engagement.completed", "evt_4")
    assert engagement["source"] == "LeadNod"  # on_create: kept from the first event


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_leadnod_stats_command_and_no_backfill(world: World) -> None:
    stats = json.loads(world.cli("stats", "--source", "leadnod", "--json").output)
    assert stats["escrow_balance"]["currency"] == "USD"
    result = CliRunner().invoke(main, ["--config", str(world.config.path), "backfill", "--source", "leadnod"],
                                env=world.env)
    assert result.exit_code != 0
    assert "no list of leads to backfill" in (result.output + str(result.exception or ""))


# --- LeadOS into HubSpot: properties created, mapping checked, contacts upserted by email -------------
def test_leados_leads_become_hubspot_contacts_by_email(tmp_path: Path) -> None:
    from fakes.hubspot import FakeHubSpot, hubspot_server

    token = f"pat-na1-{tmp_path.name}"
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (hubspot, url, _ca):
        path = write_config(
            tmp_path, f"sqlite:///{tmp_path / 'connector.db'}",
            sources={"leados": {"marketplace": "leados", "secrets": ["${LEADOS_WEBHOOK_SECRET}"]}},
            destinations={"hubspot": {"type": "hubspot", "mapping": "mappings/leados_hubspot.yaml",
                                      "access_token": "${HUBSPOT_ACCESS_TOKEN}", "id_property": "email",
                                      "property_group": "leados", "host": url, "client_side_validation": True}},
            routes=[{"source": "leados", "destination": "hubspot"}])
        env = {"LEADOS_WEBHOOK_SECRET": NEW, "HUBSPOT_ACCESS_TOKEN": token}
        config = load_config(path, env=env)
        done = Runtime(config).destination("hubspot").setup(Runtime(config).mapping("hubspot"))
        assert any("leados_score" in line for line in done)
        check = CliRunner().invoke(main, ["--config", str(path), "mappings", "check", "--against-crm"], env=env)
        assert check.exit_code == 0, check.output
        store = Store(config.database.url)
        store.upgrade()
        with serve(create_app(Runtime(config, store))) as receiver:
            for n in range(3):
                lead = make_lead(n)
                body = json.dumps({"event": "lead.delivered", "delivery_id": lead["delivery_id"], "lead": lead}).encode()
                answer = requests.post(f"{receiver}/webhooks/leados", data=body, timeout=10, headers={
                    "Content-Type": "application/json", "X-LeadOS-Signature": "sha256=" + hex_hmac(NEW, body)})
                assert answer.json()["deliveries"] == 1
            worker = Worker(Runtime(config, store))
            worker.drain(timeout=30)
            worker.close()
        store.dispose()
        contact = hubspot.find("email", "person1@company1.co.za")
        assert contact is not None
        props = contact["properties"]
        assert (props["firstname"], props["lastname"], props["jobtitle"], props["company"]) == \
            ("Naledi", "Dlamini", "CFO", "Company 1 (Pty) Ltd")
        assert (props["leados_delivery_id"], props["leados_score"], props["lifecyclestage"]) == \
            ("del_00001", "51", "lead")
        assert (props["city"], props["country"]) == ("Kathmandu", "Nepal")
