"""Benchmark: one HubSpot token shared by 1 and by 4 worker processes, against HubSpot's 100 requests per 10 s.

Each run queues the same number of leads (one lead per request: `batch_size: 1`, so requests, not
leads, are what the limit counts) in a fresh database, starts `connector worker` processes (two threads
each) and lets them drain the queue into the fake HubSpot, which runs in a process of its own and
answers 429 TEN_SECONDLY_ROLLING past 100 requests in any 10 s, as HubSpot does. The processes share
one rate budget in the database (connector.pacing).

Printed per run: requests/s, the share of the allowed rate used while there was work (every 10 s span
between the first and the last request: requests in it / 100, averaged; 1.0 is the most a rolling
limit allows), the 429s HubSpot answered, and the ratio 4 processes : 1 process. The aim: 0 x 429 and
at least 0.9 of the rate with 4 processes as with 1. A machine too busy to send 10 requests a second
shows a lower share for both; compare the two runs, measured side by side.

    .venv/bin/python bench/budget.py [--leads 300] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds a hubspot.py: drop this folder from the path, or `import hubspot` would find it, not the SDK.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from connector.config import load_config  # noqa: E402
from connector.intake import accept_many  # noqa: E402
from connector.runtime import Runtime  # noqa: E402
from connector.store import Store  # noqa: E402
from fakes.hubspot import HubSpotProcess, window_usage  # noqa: E402

LIMIT, WINDOW = 100, 10.0
SECRET = "bench-webhook-secret-0123"


def webhook_body(index: int) -> bytes:
    return json.dumps({
        "event": "lead.new", "timestamp": "2026-05-20T10:23:44Z",
        "lead": {"id": f"lead_{index:06d}", "vertical": "solar", "sub_vertical": "installation",
                 "first_name": "thabo", "suburb": "Sandton", "province": "Gauteng", "score": index % 100,
                 "score_tier": "hot", "service_type": "Solar Installation 10kW+",
                 "budget_range": "R100,000–R150,000", "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
        "contact": {"phone": "082 345 6789", "email": f"buyer{index}@example.com"},
    }).encode()


def fresh_database(base: str | None, folder: Path) -> str:
    if not base:
        return f"sqlite:///{folder / 'bench.db'}"
    import psycopg  # only with --database-url: a database of its own per run

    name = f"connector_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base.rsplit('/', 1)[0]}/{name}"


def run(processes: int, leads: int, base_url: str | None, folder: Path) -> dict[str, Any]:
    token, setup_token = f"pat-na1-bench-{uuid.uuid4()}", f"pat-na1-setup-{uuid.uuid4()}"
    fake = HubSpotProcess([token, setup_token], max_per_interval=LIMIT, interval_ms=int(WINDOW * 1000))
    work = Path(tempfile.mkdtemp(dir=folder))
    shutil.copytree(ROOT / "mappings", work / "mappings")
    database_url = fresh_database(base_url, work)
    (work / "config.yaml").write_text(yaml.safe_dump({
        "database": {"url": database_url},
        "worker": {"threads": 2, "poll_interval": 0.05},
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_SECRET}"]}},
        "destinations": {"hubspot": {"type": "hubspot", "mapping": "mappings/hubspot.yaml",
                                     "access_token": "${HUBSPOT_ACCESS_TOKEN}", "host": fake.url,
                                     "requests_per_10s": LIMIT, "batch_size": 1}},
        "routes": [{"source": "leaditio", "destination": "hubspot"}],
    }))
    workers: list[subprocess.Popen] = []
    store = Store(database_url)
    try:
        store.upgrade()
        env = {"LEADITIO_SECRET": SECRET}
        setup = load_config(work / "config.yaml", env={**env, "HUBSPOT_ACCESS_TOKEN": setup_token})
        Runtime(setup, store).destination("hubspot").setup(Runtime(setup).mapping("hubspot"))  # its own token
        config = load_config(work / "config.yaml", env={**env, "HUBSPOT_ACCESS_TOKEN": token})
        marketplace = Runtime(config).marketplaces["leaditio"]
        accept_many(config, store, ((marketplace.parse(b), b) for b in map(webhook_body, range(leads))))
        process_env = {**os.environ, **env, "HUBSPOT_ACCESS_TOKEN": token, "PYTHONPATH": str(ROOT)}
        workers = [subprocess.Popen([sys.executable, "-m", "connector", "--config", str(work / "config.yaml"),
                                     "worker"], env=process_env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(processes)]
        deadline = time.monotonic() + 30 + 3 * leads / (LIMIT / WINDOW)
        while store.status()["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.2)
        left = store.status()["queue_depth"]
        arrivals, stats = fake.arrivals(token), fake.stats()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        fake.stop()
        store.dispose()
    span = max(arrivals) - min(arrivals) if arrivals else 0.0
    return {"processes": processes, "requests": len(arrivals), "seconds": span,
            "per_second": len(arrivals) / span if span else 0.0, "used": window_usage(arrivals, LIMIT, WINDOW),
            "rate_limited": stats["rate_limited"], "left": left}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=300, help="leads (= requests) per run")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL to make a database per run on (default: SQLite files)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, args.leads, args.database_url, Path(tmp)) for n in (1, 4)]
    print(f"fake HubSpot: {LIMIT} requests per {WINDOW:.0f} s per token; one lead per request; "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}")
    print(f"{'processes':<11}{'requests':>9}{'seconds':>9}{'req/s':>7}{'used of allowed':>17}{'429s':>6}{'left':>6}")
    for r in results:
        print(f"{r['processes']:<11}{r['requests']:>9}{r['seconds']:>9.1f}{r['per_second']:>7.2f}"
              f"{r['used']:>17.3f}{r['rate_limited']:>6}{r['left']:>6}")
    one, four = results
    if one["used"]:
        print(f"used-rate ratio, 4 processes : 1 process = {four['used'] / one['used']:.2f}")


if __name__ == "__main__":
    main()
