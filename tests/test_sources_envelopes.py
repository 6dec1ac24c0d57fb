"""Documented LeadOS and LeadNod payloads -> the canonical lead and the CRM records our mappings make.

Each tests/fixtures/<marketplace>/<case>.json holds a payload, the event and canonical lead it
must become, and per default mapping the record it must produce (or the mapping error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.config import SourceConfig
from connector.errors import Permanent
from connector.lead import mapping_input
from connector.mapping import load_mapping
from connector.sources import InvalidPayload, Marketplace, marketplace_class
from connector.timeutil import parse_iso

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MARKETPLACES = ("leados", "leadnod")
CASES = [p for name in MARKETPLACES for p in sorted((FIXTURES / name).glob("*.json"))]


def source(name: str) -> Marketplace:
    return marketplace_class(name)(name, SourceConfig(marketplace=name, secrets=["s"]))


def load_case(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_payload_becomes_the_expected_event_and_lead(path: Path) -> None:
    case = load_case(path)
    event = source(path.parent.name).parse(json.dumps(case["payload"]).encode())
    expected = case["event"]
    assert event.source == path.parent.name
    assert event.event_key == expected["event_key"]
    assert event.event_type == expected["event_type"]
    assert event.lead_id == expected["lead_id"]
    assert event.occurred_at == parse_iso(expected["occurred_at"])
    assert event.deliverable is expected["deliverable"]
    assert event.origin == "webhook"
    assert event.lead == case["lead"]


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_default_mappings_make_the_expected_records(path: Path) -> None:
    case = load_case(path)
    name = path.parent.name
    event = source(name).parse(json.dumps(case["payload"]).encode())
    document = mapping_input(event.lead, source=name, event=event.event_type, marketplace=name)
    for mapping_file, expected in case["mapped"].items():
        mapping = load_mapping(ROOT / "mappings" / mapping_file)
        if "error" in expected:
            with pytest.raises(Permanent) as caught:
                mapping.apply(document)
            assert (caught.value.code, caught.value.field) == (expected["error"], expected["field"])
        else:
            assert mapping.apply(document).values == expected, mapping_file


def test_every_default_mapping_is_exercised_by_a_fixture() -> None:
    used = {m for path in CASES for m in load_case(path)["mapped"]}
    shipped = {p.name for p in (ROOT / "mappings").glob("lead[on]*_*.yaml")}
    assert shipped <= used


@pytest.mark.parametrize("mapping_file", ["leados_salesforce.yaml", "leados_hubspot.yaml", "leadnod_http.yaml"])
def test_mappings_start_with_the_schema_comment(mapping_file: str) -> None:
    first = (ROOT / "mappings" / mapping_file).read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./mapping.schema.json"


def test_declared_lead_fields_cover_what_the_documented_payloads_carry() -> None:
    """Mapping checks only know declared fields: everything a documented payload gives must be declared."""
    from connector.lead import CORE_LEAD_FIELDS, PIPELINE_FIELDS

    for path in CASES:
        if path.stem.startswith("undocumented") or path.stem == "south_african_single_name":
            continue  # these carry deliberately unknown fields
        declared = set(CORE_LEAD_FIELDS) | set(PIPELINE_FIELDS) | set(source(path.parent.name).lead_fields)
        assert set(load_case(path)["lead"]) - declared == set(), path.name


@pytest.mark.parametrize("name,body,problem", [
    ("leados", b"not json", "not valid JSON"),
    ("leados", b"[1, 2]", "JSON object"),
    ("leados", b'{"delivery_id": "del_1", "lead": {"id": "del_1"}}', "'event'"),
    ("leados", b'{"event": "lead.delivered", "delivery_id": "del_1"}', "'lead'"),
    ("leados", b'{"event": "lead.delivered", "lead": {"full_name": "No Id"}}', "'delivery_id'"),
    ("leadnod", b'{"type": "engagement.created", "data": {}}', "'id'"),
    ("leadnod", b'{"id": "evt_1", "data": {}}', "'type'"),
    ("leadnod", b'{"id": "evt_1", "type": "engagement.created", "data": "x"}', "'data'"),
])
def test_unreadable_payloads_are_invalid(name: str, body: bytes, problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        source(name).parse(body)


@pytest.mark.parametrize("name", MARKETPLACES)
def test_sample_payload_parses_and_maps(name: str) -> None:
    """`connector send-test` sends sample_payload(): it must survive the real path."""
    marketplace = source(name)
    event = marketplace.parse(json.dumps(marketplace.sample_payload()).encode())
    assert event.deliverable and event.lead_id
    document = mapping_input(event.lead, source=name, event=event.event_type, marketplace=name)
    for mapping_file in sorted((ROOT / "mappings").glob(f"{name}_*.yaml")):
        values = load_mapping(mapping_file).apply(document).values
        assert values, mapping_file.name


def test_leadnod_deliverable_types_are_the_documented_ones() -> None:
    leadnod = source("leadnod")
    assert len(leadnod.deliverable_events) == 18
    for event_type in ("engagement.created", "opportunity.matched", "escrow.dispute", "conversation.started"):
        assert event_type in leadnod.deliverable_events


def test_leadnod_main_id_per_object_kind() -> None:
    from connector.sources.leadnod import main_object_id

    assert main_object_id("engagement.completed", {"engagement_id": "eng_1", "client_id": "usr_1"}) == "eng_1"
    assert main_object_id("activity.logged", {"activity_id": "act_1", "engagement_id": "eng_1"}) == "act_1"
    assert main_object_id("activity.logged", {"engagement_id": "eng_1"}) == "eng_1"
    assert main_object_id("payment.released", {"payment_id": "pay_1", "engagement_id": "eng_1"}) == "pay_1"
    assert main_object_id("message.received", {"conversation_id": "conv_1"}) == "conv_1"
    assert main_object_id("user.verified", {"user_id": "usr_2"}) == "usr_2"
    assert main_object_id("engagement.started", {"status": "active"}) is None


def test_leadnod_event_without_object_id_is_keyed_by_the_event() -> None:
    from connector.store import lead_key

    event = source("leadnod").parse(b'{"id": "evt_9", "type": "engagement.started", "data": {"status": "x"}}')
    assert event.lead_id is None
    assert lead_key(event.source, event.lead_id, event.event_key) == "leadnod:event:evt_9"
