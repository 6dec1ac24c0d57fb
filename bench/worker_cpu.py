"""Worker CPU per delivered lead to an HTTP CRM: one claim, the mapping, one POST, a log line, one settle.

    .venv/bin/python bench/worker_cpu.py [--leads 2000] [--rounds 3] [--database-url URL] [--profile FILE]

Queues `--leads` signed-webhook-shaped Leaditio leads (through `intake.accept_many`, as a backfill does),
then drains them in this process with one `Worker` into an HTTP CRM that answers 200 at once (a child
process, so its CPU is not ours), and prints the worker's CPU (user + system, `resource.getrusage`, not
wall time: the machine is shared) per delivered lead, per round and the median. With `--profile FILE`
the last round runs under cProfile and the top functions by own time are printed (and the stats saved).

The mapping is the Node-RED peer's (bench/peer_mapping.yaml: five fields, one `map`), so the figure is
the worker's share of the same job bench/peer.py measures end to end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector import intake  # noqa: E402
from connector.logs import setup_logging  # noqa: E402
from connector.runtime import load_runtime  # noqa: E402
from connector.worker import Worker  # noqa: E402

SECRET = "bench-secret-0123456789"
SINK = ROOT / "bench" / "crm_sink.py"
MAPPING = ROOT / "bench" / "peer_mapping.yaml"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_sink() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(SINK), "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "sink listening on http://127.0.0.1:PORT/crm"
    return proc, line.split()[-1]


def bodies(count: int, prefix: str):
    for i in range(count):
        body = json.dumps({
            "event": "lead.new", "timestamp": "2026-05-20T10:23:44Z",
            "lead": {"id": f"{prefix}-{i:07d}", "vertical": "solar", "sub_vertical": "installation",
                     "first_name": "Thabo", "suburb": "Sandton", "province": "Gauteng", "score": 87,
                     "score_tier": ("hot", "warm", "qualified")[i % 3], "service_type": "Solar Installation 10kW+",
                     "budget_range": "R100,000–R150,000", "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
            "contact": {"phone": "+27823456789", "email": "thabo.m@example.com"}}).encode()
        yield body


def write_config(folder: Path, crm_url: str, database_url: str) -> Path:
    config = {"database": {"url": database_url},
              "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${BENCH_SECRET}"]}},
              "destinations": {"crm": {"type": "http", "url": crm_url, "mapping": str(MAPPING), "timeout": 5}},
              "routes": [{"source": "leaditio", "destination": "crm"}]}
    path = folder / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file per run")
    parser.add_argument("--profile", default=None, help="run the last round under cProfile, save stats here")
    args = parser.parse_args()

    sink, crm_url = start_sink()
    folder = Path(tempfile.mkdtemp(prefix="bench-worker-cpu-"))
    os.chdir(folder)
    os.environ["BENCH_SECRET"] = SECRET
    out = sys.stdout
    # The log lines are formatted and written as in production (JSON to stdout), to /dev/null, not the terminal.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    setup_logging(json_lines=True)
    runtime = load_runtime(write_config(folder, crm_url, args.database_url or f"sqlite:///{folder}/c.db"))
    runtime.store.upgrade()
    results = []
    try:
        for round_ in range(args.rounds):
            source = runtime.marketplaces["leaditio"]
            queued = intake.accept_many(runtime.config, runtime.store,
                                        ((source.parse(body), body) for body in
                                         bodies(args.leads, f"w{round_}-{int(time.time())}")))
            worker = Worker(runtime)
            profile = cProfile.Profile() if args.profile and round_ == args.rounds - 1 else None
            before, wall = cpu(), time.perf_counter()
            if profile:
                profile.enable()
            worker.drain(timeout=600)
            if profile:
                profile.disable()
            used, wall = cpu() - before, time.perf_counter() - wall
            worker.close()
            ms = used * 1000 / queued
            results.append(ms)
            print(f"round {round_ + 1}: {queued} leads, worker CPU {used:.2f} s = {ms:.3f} ms/lead "
                  f"({queued / wall:.0f} leads/s wall{', profiled' if profile else ''})", file=out, flush=True)
            if profile:
                profile.dump_stats(args.profile)
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
                print(text.getvalue(), file=out)
    finally:
        sink.terminate()
        logging.shutdown()
    plain = results[:-1] if args.profile and len(results) > 1 else results
    print(f"median worker CPU per delivered lead: {statistics.median(plain):.3f} ms "
          f"({runtime.config.database.url.split(':')[0]})", file=out)


if __name__ == "__main__":
    main()
