"""Benchmark: drain a backlog of queued leads into a local Salesforce, batched vs one call per lead.

Both runs go the whole way: Leaditio webhook bodies recorded in a temporary SQLite store, the
Worker claiming, mapping (mappings/salesforce.yaml) and settling, and the Salesforce destination
talking HTTPS to the fake org through simple-salesforce. Prints leads/s and Salesforce API calls
per lead for each mode, and the ratios. The aim for batched mode is at most 0.01 calls per lead
(every call counts against the org's daily allowance, which other integrations share).

The one-call-per-lead run drains 2,000 leads by default so the whole run stays well under three
minutes (at ~35 leads/s, 5,000 take ~2.5 minutes on their own); a smaller backlog only flatters
that mode, since claiming from a long queue costs more. `--single-leads 5000` for equal sizes.

    .venv/bin/python bench/salesforce.py [--leads 5000] [--single-leads 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.config import load_config  # noqa: E402
from connector.intake import accept_many  # noqa: E402
from connector.runtime import Runtime  # noqa: E402
from connector.store import Store  # noqa: E402
from connector.worker import Worker  # noqa: E402
from fakes.salesforce import FakeSalesforce, running  # noqa: E402

SECRET = "bench-secret"


def webhook_body(index: int) -> bytes:
    tiers = ("hot", "warm", "qualified")
    return json.dumps({
        "event": "lead.new", "timestamp": f"2026-05-20T10:{index // 3600 % 60:02d}:{index // 60 % 60:02d}Z",
        "lead": {"id": f"lead_{index:06d}", "vertical": "solar", "sub_vertical": "installation",
                 "first_name": "Thabo", "suburb": "Sandton", "province": "Gauteng", "score": index % 100,
                 "score_tier": tiers[index % 3], "service_type": "Solar Installation 10kW+",
                 "budget_range": "R100,000–R150,000", "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
        "contact": {"phone": "+27823456789", "email": f"buyer{index}@example.com"},
    }).encode()


def run(fake: FakeSalesforce, leads: int, batch_size: int | None, folder: Path) -> dict[str, float]:
    """Queue `leads` events in a fresh store, drain them into a fresh org, and measure."""
    fake.reset()
    work = Path(tempfile.mkdtemp(dir=folder))
    shutil.copytree(ROOT / "mappings", work / "mappings")
    destination = {"type": "salesforce", "mapping": "mappings/salesforce.yaml", "auth": "session",
                   "session_id": "${SF_SESSION_ID}", "instance_url": fake.url}
    if batch_size:
        destination["batch_size"] = batch_size
    (work / "config.yaml").write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{work / 'bench.db'}"},
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_SECRET}"]}},
        "destinations": {"salesforce": destination},
        "routes": [{"source": "leaditio", "destination": "salesforce"}],
    }))
    config = load_config(work / "config.yaml", env={"LEADITIO_SECRET": SECRET, "SF_SESSION_ID": fake.new_session()})
    store = Store(config.database.url)
    store.upgrade()
    marketplace = Runtime(config).marketplaces["leaditio"]
    bodies = (webhook_body(index) for index in range(leads))
    accept_many(config, store, ((marketplace.parse(body), body) for body in bodies))

    worker = Worker(Runtime(config, store))
    started = time.perf_counter()
    worker.drain(["salesforce"], timeout=900)
    elapsed = time.perf_counter() - started
    worker.close()
    delivered = store.status()["destinations"]["salesforce"].get("delivered", 0)
    store.dispose()
    landed = len(fake.leads())
    if delivered != leads or landed != leads:
        raise SystemExit(f"only {delivered} delivered and {landed} in Salesforce of {leads}")
    return {"leads": leads, "seconds": elapsed, "per_second": leads / elapsed,
            "calls": fake.api_calls, "calls_per_lead": fake.api_calls / leads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=5000, help="backlog size for the batched run")
    parser.add_argument("--single-leads", type=int, default=2000, help="backlog size for one call per lead")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp, running() as fake:
        folder = Path(tmp)
        ca_path = folder / "ca.pem"
        fake.ca.cert_pem.write_to_path(str(ca_path))
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca_path)  # requests prefers it over session.verify
        os.environ.pop("CURL_CA_BUNDLE", None)

        batched = run(fake, args.leads, None, folder)
        single = run(fake, args.single_leads, 1, folder)

    print(f"{'mode':<28}{'leads':>7}{'seconds':>10}{'leads/s':>10}{'API calls':>11}{'calls/lead':>12}")
    for name, result in (("batched (Collections, 200)", batched), ("one call per lead", single)):
        print(f"{name:<28}{result['leads']:>7}{result['seconds']:>10.1f}{result['per_second']:>10.0f}"
              f"{result['calls']:>11}{result['calls_per_lead']:>12.4f}")
    print(f"batched is {batched['per_second'] / single['per_second']:.1f}x the throughput and uses "
          f"{single['calls_per_lead'] / batched['calls_per_lead']:.0f}x fewer API calls per lead")
    verdict = "meets" if batched["calls_per_lead"] <= 0.01 else "MISSES"
    print(f"batched mode {verdict} the aim of at most 0.01 API calls per lead ({batched['calls_per_lead']:.4f})")


if __name__ == "__main__":
    main()
