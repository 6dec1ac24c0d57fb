"""Mappings: transforms, value maps, templates, policies, and the messages a CRM admin reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.errors import ConfigError, Permanent
from connector.lead import mapping_input
from connector.mapping import load_mapping
from connector.mapping.spec import json_schema
from connector.mapping.transforms import date_format
from connector.records import OutboundRecord, UpdatePolicy

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_date_formats():
    assert date_format("2026-05-20T10:23:48Z", "%Y-%m-%d") == "2026-05-20"
    assert date_format("2026-05-20T10:23:48Z", "epoch_ms") == 1779272628000
    assert date_format("2026-05-20T10:23:48Z", "date_epoch_ms") == 1779235200000
    assert date_format("yesterday", "%Y") is None


def test_apply_every_kind_of_field(tmp_path):
    mapping = load_mapping(write(tmp_path, """
fields:
  FirstName: {from: first_name, transforms: [trim, name_case]}
  Phone2: {from: suburb, transforms: [e164]}
  LastName: {template: "{first_name} (Leaditio {suburb})"}
  Company: {value: Private individual}
  Rating: {from: score_tier, map: {hot: Hot, warm: Warm}, otherwise: Cold}
  Phone: {from: phone, transforms: [e164]}
  Short: {from: service_type, transforms: [{truncate: 5}, upper]}
  Source: {from: source}
  Breakdown: {from: score_breakdown.phone_valid}
  Missing: {from: urgency, default: unknown}
  Status: {value: Open, update: on_create}
  Internal: {from: score, update: never}
"""))
    lead = {"first_name": "  thabo ", "suburb": "Sandton", "score_tier": "qualified", "phone": "082 345 6789",
            "service_type": "Solar Installation", "score_breakdown": {"phone_valid": 10}, "score": 5}
    mapped = mapping.apply(mapping_input(lead, source="leaditio", event="lead.new", marketplace="leaditio"))
    assert mapped.values == {"FirstName": "Thabo", "LastName": "  thabo  (Leaditio Sandton)".strip(),
                             "Company": "Private individual", "Rating": "Cold", "Phone": "+27823456789",
                             "Short": "SOLAR", "Source": "leaditio", "Breakdown": 10, "Missing": "unknown",
                             "Status": "Open", "Internal": 5}
    assert mapped.notes == {"Phone2": "e164: not a phone number; left empty"}
    record = OutboundRecord(1, "leaditio:x", "lead.updated", mapped.values, mapped.policies, known=True)
    assert "Status" not in record.payload() and "Internal" not in record.payload()
    assert record.payload()["Rating"] == "Cold"
    creating = OutboundRecord(1, "leaditio:x", "lead.new", mapped.values, mapped.policies, known=False)
    assert creating.payload()["Status"] == "Open" and "Internal" not in creating.payload()


def test_if_empty_policy():
    record = OutboundRecord(1, "k", "lead.updated", {"City": "Sandton", "Score": 5},
                            {"City": UpdatePolicy.if_empty, "Score": UpdatePolicy.always}, known=True)
    assert record.payload() == {"Score": 5}  # existing values unknown: leave it alone
    assert record.payload({"City": ""}) == {"City": "Sandton", "Score": 5}
    assert record.payload({"City": "Rosebank"}) == {"Score": 5}


def test_required_field_without_value_is_permanent(tmp_path):
    mapping = load_mapping(write(tmp_path, "fields:\n  Email: {from: email, required: true}\n"))
    with pytest.raises(Permanent, match="Email is required"):
        mapping.apply({"first_name": "x"})


@pytest.mark.parametrize(("text", "line", "words"), [
    ("fields:\n  FirstName: {from: frist_name}\n", 2, "unknown lead field 'frist_name', did you mean 'first_name'?"),
    ("fields:\n  Phone:\n    from: phone\n    transforms: [e146]\n", 4,
     "unknown transform 'e146', did you mean 'e164'?"),
    ("fields:\n  Name:\n    from: first_name\n    transfroms: [trim]\n", 4,
     "unknown key 'transfroms', did you mean 'transforms'?"),
    ("fields:\n  Name: {from: first_name, transforms: [{truncate: many}]}\n", 2, "needs a int argument"),
    ("fields:\n  Name: {from: first_name, value: x}\n", 2, "use only one of from, value, template"),
    ("fields:\n  Name: {from: first_name, update: sometimes}\n", 2, "'always', 'if_empty', 'on_create' or 'never'"),
    ("fields:\n  Name: {template: 'Hi {firstname}'}\n", 2, "did you mean 'first_name'"),
    ("feilds:\n  Name: {from: first_name}\n", 1, "did you mean 'fields'"),
    ("fields:\n  Name: {from: first_name\n", 3, "not valid YAML"),
])
def test_mistakes_name_file_line_and_field(tmp_path, text, line, words):
    with pytest.raises(ConfigError) as caught:
        load_mapping(write(tmp_path, text))
    message = str(caught.value)
    assert f"m.yaml:{line}" in message, message
    assert words in message, message


def test_every_shipped_mapping_loads():
    files = sorted((ROOT / "mappings").glob("*.yaml"))
    assert files
    for path in files:
        assert load_mapping(path).fields, path


def test_schema_file_is_current():
    committed = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run: connector mappings schema --write"
    assert "transforms" in committed["$defs"]["FieldSpec"]["properties"]
