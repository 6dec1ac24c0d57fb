"""`connector forget --crm` through the real client libraries (hubspot-api-client with client-side validation,
simple-salesforce, requests) against the fakes over HTTPS, and LeadOS's suppression list."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.runtime import load_runtime
from connector.worker import Worker
from fakes.http_crm import FakeCrm
from fakes.hubspot import FakeHubSpot
from fakes.leados_api import FakeLeadOS
from fakes.salesforce import running
from fakes.server import serve
from fakes.tls import FakeCA
from tests.conftest import ENV
from tests.privacy_helpers import privacy_config
from tests.test_privacy_forget import person_payload, post


@pytest.fixture
def crms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    ca = FakeCA()
    bundle = ca.trust(monkeypatch, tmp_path, "fakes-ca.pem")
    token = f"pat-na1-{uuid.uuid4()}"
    hubspot, crm, leados = FakeHubSpot(tokens=(token,)), FakeCrm(), FakeLeadOS(0, api_key=f"ldo_{uuid.uuid4().hex}")
    with running(ca) as salesforce, serve(hubspot.app, tls=ca) as hubspot_url, serve(crm.app, tls=ca) as crm_url, \
            serve(leados.app, tls=ca) as leados_url:
        yield {"ca": bundle, "token": token, "hubspot": hubspot, "hubspot_url": hubspot_url, "crm": crm,
               "crm_url": crm_url, "salesforce": salesforce, "leados": leados, "leados_url": leados_url}


def setup(tmp_path: Path, database_url: str, crms: dict[str, Any]) -> tuple[Any, Any]:
    destinations = {
        "hubspot": {"type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}",
                    "host": crms["hubspot_url"], "ca_bundle": crms["ca"], "client_side_validation": True},
        "salesforce": {"type": "salesforce", "mapping": "mappings/salesforce.yaml", "auth": "session",
                       "session_id": "${SF_SESSION_ID}", "instance_url": crms["salesforce"].url},
        "crm_http": {"type": "http", "mapping": "mappings/file.yaml", "url": f"{crms['crm_url']}/leads",
                     "ca_bundle": crms["ca"]},
    }
    sources = {"leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]},
               "leados": {"marketplace": "leados", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"],
                          "api": {"base_url": crms["leados_url"], "api_key": "${LEADOS_KEY}", "retries": 1}}}
    path = privacy_config(tmp_path, database_url, {"erase": {"crm_http": {"url": crms["crm_url"] + "/leads/{crm_id}"},
                                                            "salesforce": {"action": "delete"}}},
                          destinations=destinations, sources=sources,
                          routes=[{"source": "leaditio", "destination": d} for d in destinations])
    env = {**ENV, "HUBSPOT_ACCESS_TOKEN": crms["token"], "SF_SESSION_ID": crms["salesforce"].new_session(),
           "LEADOS_KEY": crms["leados"].api_key}
    runner = CliRunner(env={**env, "COLUMNS": "250"})

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    cli("db", "upgrade")
    runtime = load_runtime(path, env=env)
    runtime.destination("hubspot").setup(runtime.mapping("hubspot"))
    return cli, runtime


@pytest.mark.slow
def test_forget_with_crm_erases_in_every_destination_and_suppresses_at_leados(tmp_path, database_url, crms) -> None:
    cli, runtime = setup(tmp_path, database_url, crms)
    post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z", email="thabo.m@gmail.com"))
    post(runtime, person_payload("lead_B", "2026-05-20T10:00:00Z", phone="+27715550000", email="lerato@example.com",
                                 notes_phone="071 555 0000"))
    Worker(runtime).drain(timeout=30)
    hubspot, salesforce, crm = crms["hubspot"], crms["salesforce"], crms["crm"]
    assert hubspot.find("email", "thabo.m@gmail.com") is not None
    assert len(salesforce.records["Lead"]) == 2 and len(crm.records) == 2

    dry = json.loads(cli("forget", "--email", "Thabo.M@gmail.com", "--crm", "--dry-run", "--json"))
    assert {r["status"] for r in dry["crm"]} == {"would erase"} and hubspot.find("email", "thabo.m@gmail.com")

    out = cli("forget", "--email", "Thabo.M@gmail.com", "--crm", "--json")
    report = json.loads(out)
    assert "thabo" not in out.lower()  # the report never quotes the person
    statuses = {r["place"]: r["status"] for r in report["crm"]}
    assert statuses == {"destination hubspot": "erased", "destination salesforce": "erased",
                        "destination crm_http": "erased", "source leados": "erased"}, report["crm"]
    assert hubspot.find("email", "thabo.m@gmail.com") is None and hubspot.find("email", "lerato@example.com")
    assert len(salesforce.records["Lead"]) == 1 and list(crm.records) == ["leaditio:lead_B"]
    assert crms["leados"].suppressed == {"thabo.m@gmail.com"}
    assert hubspot.count("/gdpr-delete", 204) >= 1

    # one destination failing is its own line and a non-zero exit; the others are still erased
    crm.fail_next(500, body={"code": "boom", "message": "cannot delete lerato@example.com now"})
    result = cli("forget", "--lead", "lead_B", "--crm", code=1)
    assert "crm_http: failed" in result and "lerato" not in result.lower()
    assert hubspot.find("email", "lerato@example.com") is None and not salesforce.records["Lead"]
