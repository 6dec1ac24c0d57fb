"""`mappings check --against-crm` for Salesforce: the mapping next to the object's describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.errors import ConfigProblem
from connector.mapping import load_mapping
from fakes.salesforce import (
    FakeSalesforce,
    leaditio_custom_fields,
    standard_lead_fields,
)
from tests.conftest import ROOT
from tests.salesforce.conftest import session_destination


def write_mapping(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "sf.yaml"
    path.write_text(text)
    return load_mapping(path)


def test_the_default_mapping_fits_a_standard_org_with_the_documented_fields(fake: FakeSalesforce) -> None:
    assert session_destination(fake).check_against_crm(load_mapping(ROOT / "mappings" / "salesforce.yaml")) == []
    assert len(fake.rest_calls("describe")) == 1


def test_a_standard_org_without_the_custom_fields_gets_each_one_named(fake: FakeSalesforce) -> None:
    fake.objects["Lead"] = standard_lead_fields()
    problems = session_destination(fake).check_against_crm(load_mapping(ROOT / "mappings" / "salesforce.yaml"))
    names = {f["name"] for f in leaditio_custom_fields()}
    for name in names - {"Leaditio_Lead_ID__c"}:
        assert any(f": {name}: no such field on Lead" in p for p in problems), name
    assert any("external_id_field Leaditio_Lead_ID__c does not exist" in p and "External ID" in p
               for p in problems)
    assert all(p.startswith(str(ROOT / "mappings" / "salesforce.yaml")) for p in problems)


def test_every_kind_of_mistake_is_reported_with_file_and_field(fake: FakeSalesforce, tmp_path: Path) -> None:
    fake.objects["Lead"].append({**next(f for f in fake.objects["Lead"] if f["name"] == "Lead_Score__c"),
                                 "name": "Plain_Text__c", "externalId": False, "idLookup": False})
    mapping = write_mapping(tmp_path, """
fields:
  Leaditio_Lead_ID__c: {from: id}
  LastNme: {from: last_name, default: X}
  Compnay: {value: Acme}
  Rating: {from: score_tier, map: {hot: Hot, warm: Lukewarm}, otherwise: Frozen}
  Status: {value: Fresh, update: on_create}
  LeadSource: {value: Leaditio}
  Lead_Score_Tier__c: {value: "a tier name that is far too long"}
  City: {from: suburb, transforms: [{truncate: 100}]}
  IsConverted: {value: false}
  OwnerId: {value: 005000000000001, update: always}
""")
    problems = session_destination(fake).check_against_crm(mapping)
    text = "\n".join(problems)
    assert all(p.startswith(str(tmp_path / "sf.yaml") + ": ") for p in problems)
    assert "LastNme: no such field on Lead, did you mean 'LastName'?" in text
    assert "Compnay: no such field on Lead, did you mean 'Company'?" in text
    assert "Rating: value 'Lukewarm' is not in the Rating picklist" in text and "restricted" in text
    assert "Rating: value 'Frozen'" in text
    assert "Status: value 'Fresh' is not in the Status picklist" in text
    assert "LeadSource: value 'Leaditio'" in text and "Salesforce stores it" in text
    assert "Lead_Score_Tier__c: value 'a tier name that is far too lo...' is 32 characters; " \
           "Lead_Score_Tier__c holds 20" in text
    assert "City: truncate: 100 is longer than City (40 characters)" in text
    assert "IsConverted: Lead.IsConverted cannot be set when a record is created" in text
    assert "IsConverted: Lead.IsConverted cannot be updated" in text
    assert "LastName: Lead requires it on create but the mapping never fills it" in text
    assert "Company: Lead requires it on create" in text
    assert "OwnerId" not in text  # defaulted on create: not required, and writable
    assert len(problems) == 12, text


def test_a_required_field_that_may_be_empty_needs_a_default(fake: FakeSalesforce, tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, """
fields:
  Leaditio_Lead_ID__c: {from: id}
  LastName: {from: last_name}
  Company: {template: "{first_name}", default: Private}
""")
    problems = session_destination(fake).check_against_crm(mapping)
    assert problems == [f"{tmp_path / 'sf.yaml'}: LastName: Lead requires LastName but some leads may have no "
                        "value for it; add a `default:`"]


def test_an_external_id_field_that_is_not_marked_external(fake: FakeSalesforce, tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, """
fields:
  City: {from: suburb}
  LastName: {from: last_name, default: X}
  Company: {value: X}
""")
    problems = session_destination(fake, external_id_field="City").check_against_crm(mapping)
    assert problems == [f"{tmp_path / 'sf.yaml'}: external_id_field City on Lead is not marked External ID: "
                        "tick 'External ID' (and 'Unique') on the field"]


def test_an_unknown_object_or_a_failed_login_is_reported_not_raised(fake: FakeSalesforce) -> None:
    mapping = load_mapping(ROOT / "mappings" / "salesforce.yaml")
    problems = session_destination(fake, object="Leed").check_against_crm(mapping)
    assert len(problems) == 1 and "cannot read Leed from Salesforce" in problems[0] and "NOT_FOUND" in problems[0]
    fake.expire_sessions()
    problems = session_destination(fake, session_id="00Dstale").check_against_crm(mapping)
    assert len(problems) == 1 and "INVALID_SESSION_ID" in problems[0]


def test_the_cli_flag_runs_the_check(fake: FakeSalesforce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = tmp_path / "sf.yaml"
    mapping.write_text("fields:\n  Leaditio_Lead_ID__c: {from: id}\n  LastName: {value: X}\n  Company: "
                       "{value: X}\n  Ratng: {from: score_tier}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
database: {{url: "sqlite:///{tmp_path / 'c.db'}"}}
sources: {{leaditio: {{marketplace: leaditio, secrets: ["${{HOOK}}"]}}}}
destinations:
  sf: {{type: salesforce, auth: session, session_id: "${{SF_SID}}", instance_url: "{fake.url}",
        mapping: sf.yaml}}
""")
    monkeypatch.setenv("HOOK", "whsec_salesforce_check_0")
    monkeypatch.setenv("SF_SID", fake.new_session())
    result = CliRunner().invoke(main, ["--config", str(config), "mappings", "check", "--against-crm"])
    assert result.exit_code == 1, result.output
    assert "Ratng: no such field on Lead, did you mean 'Rating'?" in result.output


# --- crm setup: creating the custom fields the mapping needs -----------------------------------
def test_setup_creates_the_missing_fields_grants_access_and_is_safe_to_repeat(fake: FakeSalesforce) -> None:
    fake.objects["Lead"] = standard_lead_fields()
    mapping = load_mapping(ROOT / "mappings" / "salesforce.yaml")
    dest = session_destination(fake)

    done = dest.setup(mapping)

    created = {f["name"]: f for f in fake.objects["Lead"] if f["custom"]}
    assert set(created) == {f["name"] for f in leaditio_custom_fields()}
    assert created["Leaditio_Lead_ID__c"]["externalId"] and created["Leaditio_Lead_ID__c"]["unique"]
    assert created["Lead_Score__c"]["type"] == "double" and created["Budget_Min__c"]["type"] == "currency"
    assert created["Lead_Score_Tier__c"]["length"] == 20 and created["Service_Type__c"]["length"] == 255
    assert "created Lead.Leaditio_Lead_ID__c (Text(255), External ID, Unique)" in done
    assert done[-1].startswith("gave the connector's user edit access to 8 new field(s)")
    assert len(fake.records["PermissionSetAssignment"]) == 1
    # the fields are now visible and writable for the connector's user
    assert dest.check_against_crm(mapping) == []
    assert dest.setup(mapping) == []
    assert len(fake.records["PermissionSet"]) == 1


def test_setup_infers_types_from_transforms_and_refuses_standard_names(fake: FakeSalesforce, tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, """
fields:
  Leaditio_Lead_ID__c: {from: id}
  LastName: {value: X}
  Company: {value: X}
  Delivered_At__c: {from: delivered_at, transforms: [{date: iso}]}
  Delivered_On__c: {from: delivered_at, transforms: [{date: "%Y-%m-%d"}]}
  Notes__c: {from: service_type, transforms: [{truncate: 5000}]}
  Phone_Valid__c: {value: true}
  Mobile: {from: phone}
""")
    done = session_destination(fake).setup(mapping)
    types = {f["name"]: f["type"] for f in fake.objects["Lead"]}
    assert (types["Delivered_At__c"], types["Delivered_On__c"]) == ("datetime", "date")
    assert (types["Notes__c"], types["Phone_Valid__c"]) == ("textarea", "boolean")
    assert any("not created Lead.Mobile: only custom fields (ending in __c) can be created" in d for d in done)


def crm_setup_through_the_cli(fake: FakeSalesforce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`connector crm setup sf` for a standard org, from the repository (where the default mapping is)."""
    fake.objects["Lead"] = standard_lead_fields()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
database: {{url: "sqlite:///{tmp_path / 'c.db'}"}}
sources: {{leaditio: {{marketplace: leaditio, secrets: ["${{HOOK}}"]}}}}
destinations:
  sf: {{type: salesforce, auth: session, session_id: "${{SF_SID}}", instance_url: "{fake.url}"}}
""")
    monkeypatch.setenv("HOOK", "a-long-enough-webhook-secret")
    monkeypatch.setenv("SF_SID", fake.new_session())
    monkeypatch.chdir(ROOT)
    return CliRunner().invoke(main, ["--config", str(config), "crm", "setup", "sf"])


def test_setup_through_the_cli_uses_the_default_mapping(fake: FakeSalesforce, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    result = crm_setup_through_the_cli(fake, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "created Lead.Lead_Score__c" in result.output


def test_setup_without_the_tooling_api_says_so_and_how_to_finish_by_hand(fake: FakeSalesforce, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: a 404 from the Tooling API once read as a missing External ID field."""
    fake.tooling_api = False
    result = crm_setup_through_the_cli(fake, tmp_path, monkeypatch)
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "Tooling API is not available to the connector's user" in out
    assert "API Enabled" in out and "Customize Application" in out and "Nothing was changed" in out
    assert "Leaditio_Lead_ID__c Text(255), External ID, Unique" in out  # what to create by hand
    assert "Budget_Min__c Currency(16, 2)" in out
    assert "is there an object" not in out


def test_setup_names_the_field_salesforce_refused_and_what_was_done(fake: FakeSalesforce, tmp_path: Path) -> None:
    fake.objects["Lead"] = standard_lead_fields()
    mapping = write_mapping(tmp_path, """
fields:
  Leaditio_Lead_ID__c: {from: id}
  Good_One__c: {from: suburb}
  Bad__Name__c: {from: suburb}
""")
    with pytest.raises(ConfigProblem) as caught:
        session_destination(fake).setup(mapping)
    message = caught.value.message
    assert message.startswith("could not create Lead.Bad__Name__c (Text(255)): [FIELD_INTEGRITY_EXCEPTION]")
    assert "Already created: Leaditio_Lead_ID__c, Good_One__c." in message


def test_setup_for_an_object_salesforce_lacks_says_so(fake: FakeSalesforce) -> None:
    dest = session_destination(fake, object="Prospect__c")
    with pytest.raises(ConfigProblem, match="Salesforce has no object 'Prospect__c' that this user can see"):
        dest.setup(load_mapping(ROOT / "mappings" / "salesforce.yaml"))
