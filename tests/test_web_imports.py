"""The web process loads what the receiver needs, not the CRM client libraries the worker uses.

`create_app()` runs in a fresh interpreter (as gunicorn's worker would import it) with a config
that has every kind of destination and an alert URL absent, then answers one webhook; the modules
of simple-salesforce, hubspot-api-client and what only they pull in must not be loaded. The same
config then builds each destination (as the worker does), which does load them: the registry
still reaches every kind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ENV, ROOT, write_config

CRM_LIBRARIES = ("simple_salesforce", "hubspot", "zeep", "lxml", "jwt", "apprise")

SCRIPT = textwrap.dedent("""
    import json, sys
    from connector.web import create_app
    from tests.conftest import leaditio_payload, sign
    app = create_app()
    body = json.dumps(leaditio_payload()).encode()
    answer = app.test_client().post("/webhooks/leaditio", data=body,
                                    headers={"X-Leaditio-Signature": sign(body), "Content-Type": "application/json"})
    loaded = sorted(sys.modules)
    if sys.argv[1] == "worker":
        from connector.runtime import load_runtime
        runtime = load_runtime()
        for name in runtime.config.destinations:
            runtime.destination(name).close()
        loaded = sorted(sys.modules)
    print(json.dumps({"status": answer.status_code, "modules": loaded}))
""")


def _run(tmp_path, role: str) -> dict:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", destinations={
        "sf": {"type": "salesforce", "mapping": "mappings/salesforce.yaml", "auth": "client_credentials",
               "domain": "acme.my", "consumer_key": "${SF_KEY}", "consumer_secret": "${SF_SECRET}",
               "external_id_field": "Leaditio_Lead_ID__c"},
        "hs": {"type": "hubspot", "mapping": "mappings/hubspot.yaml", "access_token": "${HUBSPOT_ACCESS_TOKEN}"},
        "crm": {"type": "http", "url": "http://127.0.0.1:9/leads", "mapping": "mappings/file.yaml"},
        "file": {"type": "file", "path": str(tmp_path / "leads.jsonl"), "mapping": "mappings/file.yaml"}},
        routes=[{"source": "leaditio", "destination": name} for name in ("sf", "hs", "crm", "file")])
    subprocess.run([sys.executable, "-m", "connector", "--config", str(config), "db", "upgrade"], check=True,
                   cwd=tmp_path, capture_output=True, env={**ENV, "PATH": "/usr/bin:/bin", "SF_KEY": "k" * 20,
                                                           "SF_SECRET": "s" * 20, "HUBSPOT_ACCESS_TOKEN": "t" * 20})
    out = subprocess.run([sys.executable, "-c", SCRIPT, role], check=True, cwd=ROOT, capture_output=True, text=True,
                         env={**ENV, "PATH": "/usr/bin:/bin", "CONNECTOR_CONFIG": str(config), "SF_KEY": "k" * 20,
                              "SF_SECRET": "s" * 20, "HUBSPOT_ACCESS_TOKEN": "t" * 20})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_web_app_imports_no_crm_client_library(tmp_path):
    web = _run(tmp_path, "web")
    assert web["status"] == 200
    top = {name.split(".")[0] for name in web["modules"]}
    assert [name for name in CRM_LIBRARIES if name in top] == []
    assert not [name for name in web["modules"] if name.startswith(("connector.destinations.salesforce.destination",
                                                                     "connector.destinations.hubspot.destination"))]


def test_building_the_destinations_still_loads_their_libraries(tmp_path):
    worker = _run(tmp_path, "worker")
    assert worker["status"] == 200
    # hubspot-api-client itself loads on the first API call (connector.destinations.hubspot.destination)
    assert {"simple_salesforce", "connector.destinations.salesforce.destination",
            "connector.destinations.hubspot.destination"} <= set(worker["modules"])
