"""The HTTP destination's batch, one request at a time vs `concurrency` at once, side by side.

The fake CRM runs in a child process and takes `--crm-ms` per request; each round sends `--batches`
batches of 20 leads with `concurrency: 1` and with `--concurrency`, interleaved, and prints per mode the
wall time per batch, leads/s and this process's CPU per lead (the client's cost: the pool's threads
included), then the ratios. Run: `.venv/bin/python bench/http_concurrency.py`.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.destinations.http import HttpDestination, Settings  # noqa: E402
from connector.records import OutboundRecord  # noqa: E402

BATCH = HttpDestination.max_batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_crm(port: int, delay: float) -> subprocess.Popen:
    code = ("from fakes.http_crm import FakeCrm\nfrom fakes.server import Server\n"
            f"crm = FakeCrm()\ncrm.delay = {delay}\nServer(crm.app, port={port}, quiet=True).run()\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake CRM did not start")


def run(dest: HttpDestination, batches: int, ids: count) -> tuple[float, float]:
    """Seconds of wall time and of this process's CPU for `batches` batches."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        records = [OutboundRecord(delivery_id=n, lead_key=f"leaditio:lead_{n}", event_type="lead.new",
                                  values={"first_name": "Thandi", "phone": "+27823456789", "n": n}, policies={})
                   for n in (next(ids) for _ in range(BATCH))]
        outcomes = dest.send(records)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if o.error][:1]
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crm-ms", type=float, default=50.0, help="the fake CRM's time per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batches", type=int, default=10, help="batches of 20 per mode per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    crm = start_crm(port, args.crm_ms / 1000)
    url = f"http://127.0.0.1:{port}/leads"
    modes = {"one at a time": 1, f"concurrency {args.concurrency}": args.concurrency}
    dests = {name: HttpDestination("crm", Settings(url=url, concurrency=c)) for name, c in modes.items()}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    ids = count(1)
    try:
        for dest in dests.values():  # warm up: connections, the pool's threads
            run(dest, 1, ids)
        for _ in range(args.rounds):
            for name, dest in dests.items():
                results[name].append(run(dest, args.batches, ids))
    finally:
        for dest in dests.values():
            dest.close()
        crm.terminate()
        crm.wait(timeout=10)
    leads = args.batches * BATCH
    print(f"fake CRM {args.crm_ms:g} ms per request, {args.rounds} rounds x {args.batches} batches of {BATCH}")
    summary = {}
    for name, rounds in results.items():
        batch_s = statistics.median(w / args.batches for w, _ in rounds)
        cpu_ms = statistics.median(c / leads * 1000 for _, c in rounds)
        summary[name] = (batch_s, cpu_ms)
        print(f"  {name:>16}: {batch_s * 1000:7.0f} ms per batch, {BATCH / batch_s:7.0f} leads/s, "
              f"{cpu_ms:.3f} ms CPU per lead (client)")
    (one_wall, one_cpu), (many_wall, many_cpu) = summary.values()
    print(f"  ratio: {one_wall / many_wall:.2f}x the leads/s, {many_cpu / one_cpu:.2f}x the client CPU per lead")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
