"""Golden fixtures, in the style of the Singer SDK's target test streams: what lands in each CRM.

Each tests/fixtures/<marketplace>/<case>.json is one class of real-shaped input (a phone spelling,
a budget wording, a name, an email, ...) with, per shipped mapping, the record it must produce
(`mapped`) and, where a transform leaves a field empty, why (`notes`). `seq_*.json` files are
events in arrival order, each delivered before the next arrives, with what the CRMs must hold
at the end (`final`) and what became of each delivery (`states`, [Salesforce, HubSpot]).

Every case runs through every shipped mapping, and then through the real client libraries
(hubspot-api-client with client_side_validation over HTTPS, simple-salesforce, requests) into the
fakes, which store what they were sent: the CRM record is compared field by field.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.config import SourceConfig, load_config
from connector.destinations.http import HttpDestination
from connector.destinations.http import Settings as HttpSettings
from connector.destinations.hubspot import HubSpotDestination, hubspot_value
from connector.destinations.hubspot import Settings as HubSpotSettings
from connector.destinations.salesforce import SalesforceDestination
from connector.destinations.salesforce import Settings as SalesforceSettings
from connector.errors import Permanent
from connector.intake import accept
from connector.lead import mapping_input
from connector.mapping import Mapping, load_mapping
from connector.records import OutboundRecord
from connector.runtime import Runtime
from connector.sources import marketplace_class
from connector.store import Store
from connector.worker import Worker
from fakes.http_crm import FakeCrm
from fakes.hubspot import FakeHubSpot, hubspot_server
from fakes.salesforce import FakeSalesforce, running, trust
from fakes.server import serve
from tests.conftest import ENV, ROOT, write_config

FIXTURES = ROOT / "tests" / "fixtures"
MARKETPLACES = ("leaditio", "leados", "leadnod")
CASES = [p for m in MARKETPLACES for p in sorted((FIXTURES / m).glob("*.json")) if not p.stem.startswith("seq_")]
SEQUENCES = sorted((FIXTURES / "leaditio").glob("seq_*.json"))
LEADITIO_MAPPINGS = {"salesforce.yaml", "hubspot.yaml", "file.yaml"}
HUBSPOT = {"hubspot.yaml": "leaditio_lead_id", "leados_hubspot.yaml": "email"}  # mapping -> id property
SALESFORCE = {"salesforce.yaml": "Leaditio_Lead_ID__c", "leados_salesforce.yaml": "LeadOS_Id__c"}  # -> external id
HTTP = {"leadnod_http.yaml"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def mapping(name: str) -> Mapping:
    return load_mapping(ROOT / "mappings" / name)


def document(path: Path, payload: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    name = path.parent.name
    source = marketplace_class(name)(name, SourceConfig(marketplace=name, secrets=["s"]))
    event = source.parse(json.dumps(payload or load(path)["payload"]).encode())
    return mapping_input(event.lead, source=name, event=event.event_type, marketplace=name), event


def expected_records(names: set[str] | dict[str, str]) -> list[tuple[str, Path, dict[str, Any], OutboundRecord]]:
    """(mapping, fixture, expected values, record to send) for every fixture that names one of these mappings."""
    out = []
    for n, path in enumerate(CASES, start=1):
        mapped = load(path)["mapped"]
        for name in names:
            expected = mapped.get(name)
            if expected is None or "error" in expected:
                continue
            doc, event = document(path)
            record = mapping(name).apply(doc)
            out.append((name, path, expected, OutboundRecord(
                delivery_id=n, lead_key=f"{path.parent.name}:{event.lead_id}", event_type=event.event_type,
                values=record.values, policies=record.policies)))
    return out


# --- every fixture through every shipped mapping ---------------------------------------------------
@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_case_maps_to_its_golden_record(path: Path) -> None:
    case = load(path)
    doc, _event = document(path)
    for name, expected in case["mapped"].items():
        if name == "notes":
            continue
        if "error" in expected:
            with pytest.raises(Permanent) as caught:
                mapping(name).apply(doc)
            assert (caught.value.code, caught.value.field) == (expected["error"], expected["field"])
            continue
        record = mapping(name).apply(doc)
        assert record.values == expected, name
        assert record.notes == case["mapped"].get("notes", {}).get(name, {}), name


def test_leaditio_cases_name_every_leaditio_mapping_and_every_shipped_mapping_is_exercised() -> None:
    for path in CASES:
        if path.parent.name == "leaditio":
            assert set(load(path)["mapped"]) - {"notes"} == LEADITIO_MAPPINGS, path.name
    used = {m for path in CASES for m in load(path)["mapped"]}
    assert {p.name for p in (ROOT / "mappings").glob("*.yaml")} <= used


def test_the_cases_cover_the_classes_issue_16_lists() -> None:
    phones = {load(p)["payload"]["contact"].get("phone") for p in CASES if p.stem.startswith("phone_")}
    assert {"082 345 6789", "(082) 345-6789", "0027 82 345 6789", "+27 (0) 82 345 6789", "082\u00a0345\u00a06789",
            "(011) 234 5678", "+44 20 7946 0958", "12345"} <= phones
    budgets = {load(p)["payload"]["lead"].get("budget_range") for p in CASES if p.stem.startswith("budget_")}
    assert {"R100,000–R150,000", "R100 000 - R150 000", "R50k-R100k", "R1.5m", "Under R50,000", "R1m+",
            "R2,000,000+", "Not sure", None} <= budgets
    stems = {p.stem for p in CASES} | {p.stem for p in SEQUENCES}
    for needed in ("name_accents", "name_particles", "name_apostrophe", "name_non_latin", "name_empty",
                   "name_long_multibyte_at_limit", "email_case_spaces", "email_plus", "email_none",
                   "seq_out_of_order", "seq_stale_update", "seq_converted_salesforce_lead"):
        assert needed in stems


# --- through the real client libraries into the fakes -------------------------------------------------
def test_every_case_lands_in_hubspot_as_mapped(tmp_path: Path) -> None:
    for name, id_property in HUBSPOT.items():
        token = f"pat-na1-{uuid.uuid4()}"
        with hubspot_server(FakeHubSpot(tokens=(token,)), tls=True, ca_dir=tmp_path) as (fake, url, ca):
            dest = HubSpotDestination("hubspot", HubSpotSettings(
                access_token=token, host=url, ca_bundle=ca, client_side_validation=True, id_property=id_property))
            dest.setup(mapping(name))
            cases = expected_records({name})
            outcomes = {o.delivery_id: o for o in dest.send([record for *_, record in cases])}
            assert fake.count("/batch/upsert") == 1
            for _name, path, expected, record in cases:
                assert outcomes[record.delivery_id].ok, (path.name, outcomes[record.delivery_id].error)
                contact = fake.contacts[outcomes[record.delivery_id].crm_id]["properties"]
                for field in mapping(name).fields:
                    want = hubspot_value(expected[field]) if field in expected else None
                    assert contact.get(field) == want, (path.name, field)
            dest.close()


@pytest.fixture
def salesforce(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeSalesforce]:
    with running() as org:
        trust(monkeypatch, org, tmp_path)
        yield org


def test_every_case_lands_in_salesforce_as_mapped(salesforce: FakeSalesforce) -> None:
    for name, external_id in SALESFORCE.items():
        dest = SalesforceDestination("crm", SalesforceSettings(
            auth="session", session_id=salesforce.new_session(), instance_url=salesforce.url,
            external_id_field=external_id))
        dest.setup(mapping(name))
        cases = expected_records({name})
        outcomes = {o.delivery_id: o for o in dest.send([record for *_, record in cases])}
        leads = salesforce.leads(external_id)
        for _name, path, expected, record in cases:
            assert outcomes[record.delivery_id].ok, (path.name, outcomes[record.delivery_id].error)
            lead = leads[str(expected[external_id])]
            for field in mapping(name).fields:
                assert lead.get(field) == expected.get(field), (path.name, field)
            for field in ("FirstName", "LastName", "Company"):  # Salesforce lengths count characters
                assert len(lead.get(field) or "") <= {"FirstName": 40, "LastName": 80, "Company": 255}[field]
        dest.close()


def test_every_case_lands_in_the_http_crm_as_mapped() -> None:
    crm = FakeCrm()
    with serve(crm.app) as url:
        dest = HttpDestination("crm", HttpSettings(url=f"{url}/leads"))
        cases = expected_records(HTTP)
        assert cases
        assert all(o.ok for o in dest.send([record for *_, record in cases]))
        for _name, path, expected, record in cases:
            assert crm.records[record.lead_key] == expected, path.name
        dest.close()


# --- sequences: out-of-order, stale and converted, through the store and the worker ------------------------
@pytest.mark.parametrize("path", SEQUENCES, ids=lambda p: p.stem)
def test_sequences_end_with_the_newest_data_in_every_crm(path: Path, salesforce: FakeSalesforce,
                                                         tmp_path: Path) -> None:
    case = load(path)
    token = f"pat-na1-{uuid.uuid4()}"
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (hubspot, url, _ca):
        config_path = write_config(tmp_path, f"sqlite:///{tmp_path / 'golden.db'}", destinations={
            "salesforce": {"type": "salesforce", "mapping": "mappings/salesforce.yaml", "auth": "session",
                           "session_id": "${SF_SESSION_ID}", "instance_url": salesforce.url},
            "hubspot": {"type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_TOKEN}",
                        "host": url, "client_side_validation": True}},
            routes=[{"source": "leaditio", "destination": "salesforce"},
                    {"source": "leaditio", "destination": "hubspot"}])
        config = load_config(config_path, env={**ENV, "SF_SESSION_ID": salesforce.new_session(),
                                               "HUBSPOT_TOKEN": token})
        Runtime(config).destination("hubspot").setup(Runtime(config).mapping("hubspot"))
        store = Store(config.database.url)
        store.upgrade()
        try:
            states = []
            for index, payload in enumerate(case["events"]):
                body = json.dumps(payload).encode()
                recorded = accept(config, store, Runtime(config).marketplaces["leaditio"].parse(body), body)
                assert recorded is not None
                Worker(Runtime(config, store)).drain(timeout=20)
                newest = {}  # this event's delivery to each destination: the newest one
                for row in sorted(store.deliveries_query(limit=1000), key=lambda r: r["id"]):
                    newest[row["destination"]] = row["state"]
                states.append([newest.get("salesforce"), newest.get("hubspot")])
                if case.get("convert_in_salesforce_after") == index:
                    salesforce.convert(payload["lead"]["id"])
            assert states == case["final"]["states"]
            lead_id = case["events"][0]["lead"]["id"]
            lead = salesforce.leads()[lead_id]
            for field, value in case["final"]["salesforce.yaml"].items():
                assert lead.get(field) == value, field
            contact = hubspot.find("leaditio_lead_id", f"leaditio:{lead_id}")["properties"]
            for field, value in case["final"]["hubspot.yaml"].items():
                assert contact.get(field) == value, field
        finally:
            store.dispose()
