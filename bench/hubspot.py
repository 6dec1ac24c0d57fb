"""Benchmark: drain a backlog of queued leads into a local HubSpot (100 requests per 10 s), batched vs one per call.

Both runs go the whole way: Leaditio webhook bodies recorded in a temporary SQLite store, two worker
threads claiming, mapping (mappings/hubspot.yaml) and settling, and the HubSpot destination talking
to the fake HubSpot API through hubspot-api-client. The fake runs in its own process (so it does
not share this interpreter's GIL) and enforces HubSpot's ten-secondly limit per token, answering
429 when it is exceeded. Prints leads/s, HubSpot calls per lead and 429s received for each mode.

The one-call-per-lead run is capped (300 leads by default): at 100 requests per 10 s it cannot go
faster than 10 leads/s, so 5,000 leads would take over 8 minutes. The aim for batched mode is at
most 0.011 calls per lead and no lead failed by a 429.

    .venv/bin/python bench/hubspot.py [--leads 5000] [--single-leads 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# This file is called hubspot.py: drop its folder from the path, or `import hubspot` would find it, not the SDK.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from connector.config import load_config  # noqa: E402
from connector.intake import accept_many  # noqa: E402
from connector.runtime import Runtime  # noqa: E402
from connector.store import Store  # noqa: E402
from connector.store.schema import DEAD, DELIVERED  # noqa: E402
from connector.worker import run_workers  # noqa: E402
from fakes.hubspot import HubSpotProcess  # noqa: E402

SECRET = "bench-webhook-secret-0123"
TOKEN = f"pat-na1-bench-{uuid.uuid4()}"


def webhook_body(index: int) -> bytes:
    tiers = ("hot", "warm", "qualified")
    verticals = ("solar", "insurance", "financial", "property")
    return json.dumps({
        "event": "lead.new", "timestamp": f"2026-05-20T10:{index // 3600 % 60:02d}:{index // 60 % 60:02d}Z",
        "lead": {"id": f"lead_{index:06d}", "vertical": verticals[index % 4], "sub_vertical": "installation",
                 "first_name": "thabo", "last_name": "mokoena", "suburb": "Sandton", "province": "Gauteng",
                 "score": index % 100, "score_tier": tiers[index % 3], "service_type": "Solar Installation 10kW+",
                 "budget_range": "R100,000–R150,000", "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
        "contact": {"phone": "082 345 6789", "email": f"buyer{index}@example.com"},
    }).encode()


def run(fake: HubSpotProcess, leads: int, batch_size: int | None, folder: Path, name: str) -> dict[str, float]:
    """Queue `leads` events in a fresh store, drain them into HubSpot with two worker threads, and measure."""
    work = Path(tempfile.mkdtemp(dir=folder))
    shutil.copytree(ROOT / "mappings", work / "mappings")
    destination: dict[str, Any] = {"type": "hubspot", "mapping": "mappings/hubspot.yaml",
                                   "access_token": "${HUBSPOT_ACCESS_TOKEN}", "host": fake.url,
                                   "requests_per_10s": 100}
    if batch_size:
        destination["batch_size"] = batch_size
    (work / "config.yaml").write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{work / 'bench.db'}"},
        "worker": {"threads": 2, "poll_interval": 0.05},
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_SECRET}"]}},
        "destinations": {name: destination},
        "routes": [{"source": "leaditio", "destination": name}],
    }))
    config = load_config(work / "config.yaml", env={"LEADITIO_SECRET": SECRET, "HUBSPOT_ACCESS_TOKEN": TOKEN})
    store = Store(config.database.url)
    store.upgrade()
    Runtime(config).destination(name).setup(Runtime(config).mapping(name))  # properties exist before the clock starts
    marketplace = Runtime(config).marketplaces["leaditio"]
    bodies = (webhook_body(index + (100_000 if batch_size else 0)) for index in range(leads))
    accept_many(config, store, ((marketplace.parse(body), body) for body in bodies))

    before = fake.stats()
    stop = threading.Event()
    started = time.perf_counter()
    threads = run_workers(Runtime(config, store), config.worker.threads, stop)
    deadline = time.monotonic() + 600
    while store.status()["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    after = fake.stats()
    counts = store.status()["destinations"][name]
    dead_by_429 = [r for r in store.deliveries_query(state=DEAD, destination=name, limit=10_000)
                   if "429" in (r["last_error"] or "") or "RATE" in (r["last_error_code"] or "")]
    store.dispose()
    calls = after["calls"] - before["calls"]
    return {"leads": leads, "seconds": elapsed, "per_second": leads / elapsed, "calls": calls,
            "calls_per_lead": calls / leads, "rate_limited": after["rate_limited"] - before["rate_limited"],
            "delivered": counts.get(DELIVERED, 0), "dead": counts.get(DEAD, 0), "dead_by_429": len(dead_by_429)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=5000, help="backlog size for the batched run")
    parser.add_argument("--single-leads", type=int, default=300,
                        help="backlog size for one call per lead (capped: 10 leads/s at most)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    fake = HubSpotProcess([TOKEN], max_per_interval=100, interval_ms=10_000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            batched = run(fake, args.leads, None, Path(tmp), "hubspot_batched")
            single = run(fake, args.single_leads, 1, Path(tmp), "hubspot_single")
    finally:
        fake.stop()

    print("fake HubSpot limit: 100 requests per 10 s per token; two worker threads share one budget")
    print(f"{'mode':<26}{'leads':>7}{'seconds':>9}{'leads/s':>9}{'calls':>7}{'calls/lead':>12}{'429s':>6}"
          f"{'delivered':>11}{'dead':>6}")
    for label, r in (("batched (100 per call)", batched), ("one call per lead", single)):
        print(f"{label:<26}{r['leads']:>7}{r['seconds']:>9.1f}{r['per_second']:>9.1f}{r['calls']:>7}"
              f"{r['calls_per_lead']:>12.4f}{r['rate_limited']:>6}{r['delivered']:>11}{r['dead']:>6}")
    print(f"(one call per lead was capped at {args.single_leads} leads: at 10 requests/s, "
          f"{args.leads} leads would take {args.leads / 10 / 60:.0f}+ minutes)")
    print(f"batched is {batched['per_second'] / single['per_second']:.0f}x the throughput and makes "
          f"{single['calls_per_lead'] / batched['calls_per_lead']:.0f}x fewer HubSpot calls per lead")
    aim = batched["calls_per_lead"] <= 0.011 and batched["dead_by_429"] == 0 and single["dead_by_429"] == 0
    print(f"aim (<= 0.011 calls per lead, no lead failed by a 429): {'met' if aim else 'MISSED'} "
          f"({batched['calls_per_lead']:.4f} calls per lead; leads dead by a 429: "
          f"{batched['dead_by_429'] + single['dead_by_429']})")


if __name__ == "__main__":
    main()
