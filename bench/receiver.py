"""Receiver speed: signed webhooks against gunicorn, next to a bare Flask endpoint under the same settings.

    .venv/bin/python bench/receiver.py [--requests 5000] [--concurrency 16] [--rounds 3] [--bare-wait MS] [--gunicorn OPTIONS]

Both apps run under the Procfile's gunicorn settings (connector/gunicorn_conf.py) unless --gunicorn says
otherwise. Each round makes three runs back to back, each with a fresh SQLite database:
  1. bare    - a Flask endpoint that only answers 200 (the ceiling for this machine and these settings)
  2. connector - the real receiver: verify, store durably (SQLite, the WAL fsynced before the answer), answer
  3. connector + slow CRM - the same while a worker delivers to a CRM that takes 1 s per call:
     the answer time must not change, because delivery is asynchronous.
  4. with --bare-wait MS: the bare endpoint plus one sleep of MS per request, no other work. A 2xx has to
     wait for the disk once; this is what that one wait alone costs a gthread worker in CPU.
Prints accepted/s, p50/p99 time to answer and the gunicorn workers' CPU per request for each (median over
rounds), and the ratios per round.

Each keep-alive connection stays with the gunicorn process that accepted it, so each run prints how its
connections spread over the processes. The Procfile's settings give every process its own listening
socket (SO_REUSEPORT) and the kernel spreads connections over them; with one shared socket (e.g.
--gunicorn without --reuse-port), a burst of connects lands most of them on whichever process is awake
(16 of 16, or 11 of 16, seen here), which then serves them on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import SECRET, free_port, wait_up  # noqa: E402
from fakes.gunicorn_procs import worker_cpu, worker_sockets  # noqa: E402

# What the Procfile runs (connector/gunicorn_conf.py: 4 workers x 4 threads, gthread), for both apps.
GUNICORN = ["--config", "python:connector.gunicorn_conf", "--log-level", "warning"]
WARM_UP = 200
BARE, BARE_APP = "bare Flask endpoint", "bench.bare_app:create_app()"
LOG = Path(tempfile.gettempdir()) / "bench-receiver-gunicorn.log"  # the last run's final lines


def bodies(count: int) -> list[tuple[bytes, str]]:
    out = []
    for i in range(count):
        payload = {"event": "lead.new", "timestamp": "2026-05-20T10:23:44Z",
                   "lead": {"id": f"lead_{i:06d}", "vertical": "solar", "first_name": "Thabo", "suburb": "Sandton",
                            "province": "Gauteng", "score": 87, "score_tier": "hot",
                            "service_type": "Solar Installation 10kW+", "budget_range": "R100,000–R150,000",
                            "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
                   "contact": {"phone": "+27823456789", "email": "thabo.m@example.com"}}
        body = json.dumps(payload).encode()
        out.append((body, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()))
    return out


def raw_requests(work: list[tuple[bytes, str]]) -> list[bytes]:
    """Whole HTTP requests built before the clock starts, so the load generator costs little CPU."""
    return [(f"POST /webhooks/leaditio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             f"X-Leaditio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            for body, signature in work]


def load(port: int, requests: list[bytes], concurrency: int, server_pid: int | None = None) -> dict[str, Any]:
    """Send every request once over `concurrency` keep-alive connections from one thread; time each answer.

    One event loop on raw sockets: a thread per connection would spend more CPU than the server
    we measure, on the same 2 cores. With `server_pid`, the result says how the connections spread.
    """
    selector = selectors.DefaultSelector()
    pending = iter(requests)
    times: list[float] = []
    failures = 0

    def send_next(sock: socket.socket, state: dict) -> bool:
        request = next(pending, None)
        if request is None:
            selector.unregister(sock)
            sock.close()
            return False
        state["buffer"], state["started"] = b"", time.perf_counter()
        sock.sendall(request)
        return True

    def connect() -> tuple[socket.socket, dict]:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state: dict = {}
        selector.register(sock, selectors.EVENT_READ, state)
        return sock, state

    connections = [connect() for _ in range(concurrency)]
    spread = connection_spread(server_pid, port, concurrency) if server_pid else []
    open_connections = 0
    started = time.perf_counter()
    for sock, state in connections:
        open_connections += send_next(sock, state)
    while open_connections:
        for key, _ in selector.select():
            sock, state = key.fileobj, key.data
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a connection before answering")
            state["buffer"] += chunk
            head_end = state["buffer"].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = state["buffer"][:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(state["buffer"]) < head_end + 4 + length:
                continue
            times.append(time.perf_counter() - state["started"])
            failures += state["buffer"][9:12] != b"200"
            if b"connection: close" in head:  # e.g. gunicorn's sync workers: one request per connection
                selector.unregister(sock)
                sock.close()
                sock, state = connect()
            open_connections -= not send_next(sock, state)
    elapsed = time.perf_counter() - started
    times.sort()
    return {"rate": len(times) / elapsed, "p50": statistics.median(times) * 1000,
            "p99": times[int(len(times) * 0.99) - 1] * 1000, "failed": failures, "spread": spread}


def connection_spread(server_pid: int, port: int, expected: int) -> list[int]:
    """How many of the load's connections each gunicorn worker holds, most first (empty off Linux).

    Waits up to a second for the workers to accept all `expected` connections."""
    if not Path("/proc/net/tcp").exists():
        return []
    deadline = time.monotonic() + 1
    while True:
        counts = [len(sockets) for sockets in worker_sockets(server_pid, port).values()]
        if sum(counts) >= expected or time.monotonic() > deadline:
            return sorted((count for count in counts if count), reverse=True)
        time.sleep(0.01)


def write_config(folder: Path, crm_url: str | None) -> Path:
    destination = ({"type": "http", "url": crm_url, "mapping": str(ROOT / "mappings" / "file.yaml"), "timeout": 5}
                   if crm_url else {"type": "file", "path": "leads.jsonl", "mapping": str(ROOT / "mappings/file.yaml")})
    config = {"database": {"url": "sqlite:///connector.db"},
              "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${BENCH_SECRET}"]}},
              "destinations": {"crm": destination},
              "routes": [{"source": "leaditio", "destination": "crm"}],
              "worker": {"threads": 4}}
    path = folder / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def slow_crm(port: int) -> subprocess.Popen:
    code = ("import time\nfrom flask import Flask\napp = Flask('slow')\n"
            "@app.post('/leads')\ndef leads():\n    time.sleep(1.0)\n    return {'id': 'x'}\n")
    return subprocess.Popen([sys.executable, "-c", code + f"app.run(port={port}, threaded=True)"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(name: str, app: str, requests: list[bytes], concurrency: int, config: Path | None, crm: str | None,
        extra_env: dict[str, str] | None = None, gunicorn: list[str] | None = None) -> dict:
    env = {**os.environ, "BENCH_SECRET": SECRET, **(extra_env or {})}
    extra: list[subprocess.Popen] = []
    if config is not None:
        env["CONNECTOR_CONFIG"] = str(config)
        subprocess.run([sys.executable, "-m", "connector", "db", "upgrade"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        if crm:
            extra.append(subprocess.Popen([sys.executable, "-m", "connector", "worker"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", *(gunicorn or GUNICORN), "--bind", f"127.0.0.1:{port}", app],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # stdout is a pipe read by another process, as Heroku's log router reads it (not by this
    # process, whose one thread must only generate load); its last lines are kept for diagnosis.
    with LOG.open("wb") as log:
        reader = subprocess.Popen(["tail", "-n", "50"], stdin=server.stdout, stdout=log)
    server.stdout.close()
    try:
        wait_up(port, 30, f" (a gunicorn's last lines go to {LOG})")
        load(port, requests[:WARM_UP], concurrency)  # distinct ids from the measured run
        cpu_before = worker_cpu(server.pid)
        result = load(port, requests[WARM_UP:], concurrency, server.pid)
        cpu_after = worker_cpu(server.pid)
        if cpu_before is not None and cpu_after is not None:
            result["cpu_ms"] = (cpu_after - cpu_before) * 1000 / (len(requests) - WARM_UP)
    finally:
        for proc in [server, *extra]:
            proc.terminate()
        for proc in [server, *extra]:
            proc.wait(timeout=30)
        reader.wait(timeout=30)
    result["name"] = name
    return result


def one_round(requests: list[bytes], concurrency: int, crm_url: str, bare_wait_ms: float,
              compare: list[str] | None = None) -> list[dict]:
    """Bare endpoint, connector, connector with a slow CRM (the bare endpoint with one wait, the connector
    under other gunicorn options): back to back, each connector run on a fresh database."""
    results = [run(BARE, BARE_APP, requests, concurrency, None, None)]
    runs = [("connector (SQLite)", None, None), ("connector + CRM taking 1 s/call", crm_url, None)]
    if compare:
        runs.append(("connector, --compare options", None, compare))
    for name, url, options in runs:
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            try:
                results.append(run(name, "connector.web:create_app()", requests, concurrency,
                                   write_config(Path(folder), url), url, gunicorn=options))
            finally:
                os.chdir(ROOT)
    if bare_wait_ms:
        results.append(run(f"bare + one {bare_wait_ms:g} ms wait", BARE_APP, requests,
                           concurrency, None, None, {"BENCH_WAIT_SECONDS": str(bare_wait_ms / 1000)}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="the three runs are repeated; medians are reported")
    parser.add_argument("--bare-wait", type=float, default=0, metavar="MS",
                        help="also run the bare endpoint with one sleep of MS per request (e.g. 0.3)")
    parser.add_argument("--gunicorn", default=" ".join(GUNICORN), help="gunicorn options for both apps")
    parser.add_argument("--compare", default=None, metavar="OPTIONS",
                        help="also run the connector under these gunicorn options in each round, and print "
                             "its throughput / the connector's under --gunicorn")
    args = parser.parse_args()
    compare = args.compare.split() if args.compare else None
    GUNICORN[:] = args.gunicorn.split()
    requests = raw_requests(bodies(args.requests + WARM_UP))
    crm_port = free_port()
    crm = slow_crm(crm_port)
    rounds = []
    try:
        wait_up(crm_port, 30, f" (a gunicorn's last lines go to {LOG})")
        for number in range(args.rounds):
            rounds.append(one_round(requests, args.concurrency, f"http://127.0.0.1:{crm_port}/leads", args.bare_wait,
                                    compare))
            print(f"round {number + 1}: " + ", ".join(
                f"{r['name']} {r['rate']:.0f}/s p99 {r['p99']:.1f} ms connections {r['spread'] or '?'}"
                for r in rounds[-1]), flush=True)
    finally:
        crm.terminate()
    print(f"\n{args.requests} signed webhooks, concurrency {args.concurrency}, gunicorn {' '.join(GUNICORN)}, "
          f"{os.cpu_count()} cores, median of {args.rounds} rounds\n")
    print(f"{'run':34} {'accepted/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8} {'CPU ms/req':>11}")
    for index, name in enumerate(r["name"] for r in rounds[0]):
        runs = [each[index] for each in rounds]
        cpu = f"{median(runs, 'cpu_ms'):11.3f}" if all("cpu_ms" in r for r in runs) else f"{'-':>11}"
        print(f"{name:34} {median(runs, 'rate'):11.0f} {median(runs, 'p50'):8.2f} {median(runs, 'p99'):8.2f} "
              f"{sum(r['failed'] for r in runs):8d} {cpu}")
    ratios = [ours["rate"] / bare["rate"] for bare, ours, *_ in rounds]
    slowdowns = [slow["p99"] / ours["p99"] for _, ours, slow, *_ in rounds]
    print(f"\nthroughput vs bare endpoint: {statistics.median(ratios):.2f} (aim >= 0.5; "
          f"per round {', '.join(f'{r:.2f}' for r in ratios)})")
    if all("cpu_ms" in bare and "cpu_ms" in ours for bare, ours, *_ in rounds):
        cpu_ratios = [bare["cpu_ms"] / ours["cpu_ms"] for bare, ours, *_ in rounds]
        print(f"CPU per request, bare / connector: {statistics.median(cpu_ratios):.2f} (the throughput ratio the "
              f"cores allow; per round {', '.join(f'{r:.2f}' for r in cpu_ratios)})")
    if compare:
        compared = [each[3]["rate"] / each[1]["rate"] for each in rounds]
        print(f"connector under {args.compare} / under {' '.join(GUNICORN)}: {statistics.median(compared):.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in compared)})")
    if args.bare_wait:
        waits = [waited["rate"] / bare["rate"] for bare, *_, waited in rounds]
        print(f"bare + one {args.bare_wait:g} ms wait / bare: {statistics.median(waits):.2f} (what one wait costs "
              f"before any work; per round {', '.join(f'{r:.2f}' for r in waits)})")
    p99s = [ours["p99"] for _, ours, *_ in rounds]
    print(f"p99 on SQLite: {statistics.median(p99s):.1f} ms (aim < 25 ms; "
          f"per round {', '.join(f'{p:.1f}' for p in p99s)})")
    print(f"p99 with a 1 s CRM / without: {statistics.median(slowdowns):.2f} (delivery is asynchronous: ~1.0)")


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


if __name__ == "__main__":
    main()
