"""`connector crm setup` and `connector mappings check --against-crm` for HubSpot, against the fake."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from connector.cli import main
from connector.destinations.hubspot import HubSpotDestination, Settings
from connector.errors import ConfigProblem
from connector.mapping import Mapping, load_mapping
from fakes.hubspot import FakeHubSpot, _property, hubspot_server
from tests.conftest import ENV, write_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def token() -> str:
    return f"pat-na1-{uuid.uuid4()}"


@pytest.fixture
def served(token: str) -> Iterator[tuple[FakeHubSpot, str]]:
    with hubspot_server(FakeHubSpot(tokens=(token,))) as (fake, url, _ca):
        yield fake, url


def destination(url: str, token: str, **settings: Any) -> HubSpotDestination:
    return HubSpotDestination("hubspot", Settings(access_token=token, host=url, client_side_validation=True,
                                                  **settings))


def write_mapping(tmp_path: Path, fields: dict[str, Any]) -> Mapping:
    path = tmp_path / "custom_hubspot.yaml"
    path.write_text(yaml.safe_dump({"fields": fields}, sort_keys=False))
    return load_mapping(path)


def test_setup_creates_what_the_default_mapping_needs_once(served: tuple[FakeHubSpot, str], token: str) -> None:
    fake, url = served
    hubspot = destination(url, token)
    mapping = load_mapping(ROOT / "mappings" / "hubspot.yaml")
    done = hubspot.setup(mapping)
    assert done[0] == "created property group 'leaditio' (Lead marketplace)"
    lead_id = fake.properties["leaditio_lead_id"]
    assert lead_id["hasUniqueValue"] is True and lead_id["type"] == "string" and lead_id["groupName"] == "leaditio"
    tier = fake.properties["leaditio_tier"]
    assert tier["type"] == "enumeration" and [o["value"] for o in tier["options"]] == ["hot", "warm", "qualified",
                                                                                       "other"]
    assert fake.properties["leaditio_score"]["type"] == "number"
    assert fake.properties["leaditio_received_at"]["type"] == "datetime"
    assert "firstname" not in " ".join(done)  # HubSpot's own properties are left alone
    created = fake.count("/crm/v3/properties/contacts", 201)
    assert hubspot.setup(mapping) == []  # nothing to do the second time
    assert fake.count("/crm/v3/properties/contacts", 201) == created
    assert hubspot.check_against_crm(mapping) == []


def test_setup_adds_missing_enumeration_options(served: tuple[FakeHubSpot, str], token: str, tmp_path: Path) -> None:
    fake, url = served
    hubspot = destination(url, token)
    hubspot.setup(write_mapping(tmp_path, {"leaditio_lead_id": {"from": "id"},
                                           "leaditio_tier": {"from": "score_tier", "map": {"hot": "hot"}}}))
    mapping = write_mapping(tmp_path, {
        "leaditio_lead_id": {"from": "id", "required": True},
        "leaditio_tier": {"from": "score_tier", "map": {"hot": "hot", "warm": "warm"}, "otherwise": "other"}})
    assert hubspot.setup(mapping) == ["added options warm, other to 'leaditio_tier'"]
    assert [o["value"] for o in fake.properties["leaditio_tier"]["options"]] == ["hot", "warm", "other"]


def test_setup_refuses_an_id_property_without_unique_values(served: tuple[FakeHubSpot, str], token: str,
                                                            tmp_path: Path) -> None:
    fake, url = served
    fake.properties["leaditio_lead_id"] = _property("leaditio_lead_id", "Lead id", "string", "text",
                                                    hubspot_defined=False)
    with pytest.raises(ConfigProblem) as caught:
        destination(url, token).setup(write_mapping(tmp_path, {"leaditio_lead_id": {"from": "id"}}))
    assert "does not require unique values" in caught.value.message


def test_setup_does_not_create_a_typo_of_a_hubspot_property(served: tuple[FakeHubSpot, str], token: str,
                                                            tmp_path: Path) -> None:
    fake, url = served
    done = destination(url, token).setup(write_mapping(tmp_path, {"leaditio_lead_id": {"from": "id"},
                                                                  "firstnme": {"from": "first_name"}}))
    assert "not created 'firstnme': it looks like HubSpot's own 'firstname'; fix the mapping" in done
    assert "firstnme" not in fake.properties


def test_check_names_file_and_field_for_every_misfit(served: tuple[FakeHubSpot, str], token: str,
                                                     tmp_path: Path) -> None:
    fake, url = served
    hubspot = destination(url, token)
    hubspot.setup(load_mapping(ROOT / "mappings" / "hubspot.yaml"))
    mapping = write_mapping(tmp_path, {
        "firstnme": {"from": "first_name"},
        "lifecyclestage": {"value": "Lead", "update": "on_create"},
        "hs_lead_status": {"value": "NEW", "update": "never"},  # never sent: not checked
        "leaditio_tier": {"from": "score_tier", "map": {"hot": "hott", "warm": "warm"}, "otherwise": "none",
                          "default": "cold"},
        "leaditio_vertical": {"from": "vertical"},
        "leaditio_score": {"value": "high"},
        "hs_object_id": {"from": "id"},
        "leaditio_colour": {"value": "blue"},
    })
    problems = hubspot.check_against_crm(mapping)
    where = str(mapping.path)
    assert all(p.startswith(where) for p in problems)
    text = "\n".join(problems)
    assert "field firstnme: HubSpot contacts have no property 'firstnme', did you mean 'firstname'?" in text
    assert "field lifecyclestage: value 'Lead' is not an option of 'lifecyclestage'" in text
    assert "write its value 'lead'" in text
    assert "field leaditio_tier: map value for 'hot' 'hott' is not an option" in text
    assert "did you mean 'hot'?" in text
    assert "field leaditio_tier: otherwise 'none'" in text and "field leaditio_tier: default 'cold'" in text
    assert "field leaditio_vertical: reads lead field 'vertical' straight into enumeration property" in text
    assert "field leaditio_score: value 'high' is not a number" in text
    assert "field hs_object_id: property 'hs_object_id' is read-only" in text
    assert "field leaditio_colour: HubSpot contacts have no property 'leaditio_colour', did you mean " \
           "'leaditio_score'? (if not, `connector crm setup hubspot` creates it)" in text
    assert f"{where}: no field 'leaditio_lead_id'" in text
    assert "hs_lead_status" not in text


def test_check_with_a_bad_token_says_so(served: tuple[FakeHubSpot, str], tmp_path: Path) -> None:
    _, url = served
    problems = destination(url, "pat-na1-revoked").check_against_crm(
        write_mapping(tmp_path, {"leaditio_lead_id": {"from": "id"}}))
    assert len(problems) == 1 and "could not read HubSpot's contacts properties" in problems[0]
    assert "Authentication credentials not found" in problems[0]


def test_cli_crm_setup_then_mappings_check(served: tuple[FakeHubSpot, str], token: str, tmp_path: Path) -> None:
    fake, url = served
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", destinations={"hubspot": {
        "type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}",
        "host": url}}, routes=[{"source": "leaditio", "destination": "hubspot"}])
    runner = CliRunner(env={**ENV, "HUBSPOT_ACCESS_TOKEN": token, "COLUMNS": "250"})
    before = runner.invoke(main, ["--config", str(path), "mappings", "check", "--against-crm"])
    assert before.exit_code == 1 and "connector crm setup hubspot" in before.output
    result = runner.invoke(main, ["--config", str(path), "crm", "setup", "hubspot"])
    assert result.exit_code == 0, result.output
    assert "created string property 'leaditio_lead_id'" in result.output
    assert fake.properties["leaditio_lead_id"]["hasUniqueValue"] is True
    again = runner.invoke(main, ["--config", str(path), "crm", "setup", "hubspot"])
    assert "nothing to do" in again.output
    after = runner.invoke(main, ["--config", str(path), "mappings", "check", "--against-crm"])
    assert after.exit_code == 0 and "the CRM agrees" in after.output
