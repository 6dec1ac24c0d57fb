"""At rest, how long from a webhook's 200 to the CRM's receipt of its lead: instant wake-ups vs polling only.

    .venv/bin/python bench/wake.py [--count 60] [--gap 0.6] [--only pg|serve]

Two deployments, each run twice in one go, once with `worker.instant_wakeup: true` (the default)
and once with `false` (idle workers find new leads only at their next poll, every 0.5 s):

- PostgreSQL: the receiver under gunicorn (the Procfile's settings, 2 processes) and a separate
  `connector worker` process (2 threads): the worker hears new deliveries by LISTEN/NOTIFY;
- `connector serve` on SQLite: the receiver wakes the in-process worker directly.

The CRM is the fake HTTP CRM in a process of its own, stamping each call's arrival with the
machine's monotonic clock. Webhooks are sent one at a time, `--gap` seconds apart plus up to 50%
at random, so the worker is idle when each arrives and a poll can be anywhere in its cycle.
Prints p50 / p95 / max of (CRM receipt - 200 answer) per run and the ratio poll-only / instant.
A receipt can come before the sender has read its 200: such a latency is below zero.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    CrmProcess,
    connector,
    free_port,
    gunicorn,
    percentile,
    postgres_database,
    stop_all,
    upgrade,
    wait_up,
    webhook,
    write_config,
)

WARM_UP = 5


def send(conn: http.client.HTTPConnection, body: bytes, signature: str) -> float:
    """POST one webhook; the monotonic time its 200 was read."""
    conn.request("POST", "/webhooks/leaditio", body=body,
                 headers={"Content-Type": "application/json", "X-Leaditio-Signature": signature})
    answer = conn.getresponse()
    answer.read()
    at = time.monotonic()
    if answer.status != 200:
        raise SystemExit(f"webhook answered {answer.status}")
    return at


def measure(port: int, crm: CrmProcess, count: int, gap: float) -> list[float]:
    run = uuid.uuid4().hex[:6]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answered: dict[str, float] = {}
    for index in range(WARM_UP + count):
        body, signature = webhook(index, run)
        at = send(conn, body, signature)
        if index >= WARM_UP:
            answered[f"leaditio:lead_{run}{index:06d}"] = at
        time.sleep(gap * random.uniform(1.0, 1.5))
    deadline = time.monotonic() + 30
    while crm.count() < WARM_UP + count and time.monotonic() < deadline:
        time.sleep(0.1)
    arrivals = crm.stats()["arrivals"]
    conn.close()
    missing = [k for k in answered if k not in arrivals]
    if missing:
        raise SystemExit(f"{len(missing)} leads never reached the CRM")
    return [(arrivals[key] - at) * 1000 for key, at in answered.items()]


def run_pg(instant: bool, count: int, gap: float) -> list[float]:
    crm = CrmProcess()
    procs = []
    try:
        with postgres_database() as url, tempfile.TemporaryDirectory() as folder:
            config = write_config(Path(folder), url, crm.url, threads=2, instant_wakeup=instant)
            upgrade(config)
            port = free_port()
            procs = [gunicorn(config, port), connector(config, "worker")]
            wait_up(port)
            time.sleep(1.0)  # the worker's start-up (imports, LISTEN)
            try:
                return measure(port, crm, count, gap)
            finally:
                stop_all(procs)
    finally:
        crm.stop()


def run_serve(instant: bool, count: int, gap: float) -> list[float]:
    crm = CrmProcess()
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = write_config(Path(folder), f"sqlite:///{folder}/connector.db", crm.url, threads=2,
                                  instant_wakeup=instant)
            port = free_port()
            proc = connector(config, "serve", "--port", str(port))
            try:
                wait_up(port)
                return measure(port, crm, count, gap)
            finally:
                stop_all([proc])
    finally:
        crm.stop()


def line(name: str, latencies: list[float]) -> str:
    return (f"  {name:<42} p50 {percentile(latencies, 0.5):7.1f} ms   p95 {percentile(latencies, 0.95):7.1f} ms   "
            f"max {max(latencies):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=60, help="measured webhooks per run")
    parser.add_argument("--gap", type=float, default=0.6, help="seconds between webhooks (plus up to 50%%)")
    parser.add_argument("--only", choices=["pg", "serve"], help="one deployment only")
    args = parser.parse_args()
    deployments = [("PostgreSQL, gunicorn + worker process", run_pg), ("serve, SQLite", run_serve)]
    print(f"{args.count} webhooks at rest per run, {args.gap:g}-{args.gap * 1.5:g} s apart; "
          "time from the 200 answer to the CRM's receipt")
    for name, run in deployments:
        if args.only and (args.only == "pg") != (run is run_pg):
            continue
        instant = run(True, args.count, args.gap)
        polled = run(False, args.count, args.gap)
        print(name)
        print(line("instant wake-up (LISTEN/NOTIFY or doorbell)", instant))
        print(line("poll only (worker.instant_wakeup: false)", polled))
        print(f"  ratio poll-only / instant: p50 {percentile(polled, 0.5) / max(percentile(instant, 0.5), 0.1):.1f}x, "
              f"p95 {percentile(polled, 0.95) / max(percentile(instant, 0.95), 0.1):.1f}x")


if __name__ == "__main__":
    main()
