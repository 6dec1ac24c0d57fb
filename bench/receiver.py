"""Receiver speed: signed webhooks against gunicorn, next to a bare Flask endpoint under the same settings.

    .venv/bin/python bench/receiver.py [--requests 5000] [--concurrency 16]

Three runs in one go, each with a fresh SQLite database:
  1. bare    - a Flask endpoint that only answers 200 (the ceiling for this machine and these settings)
  2. connector - the real receiver: verify, store durably (SQLite, synchronous=FULL), answer
  3. connector + slow CRM - the same while a worker delivers to a CRM that takes 1 s per call:
     the answer time must not change, because delivery is asynchronous.
Prints accepted/s and p50/p99 time to answer for each, and the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
GUNICORN = ["--workers", "4", "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} did not start (see the gunicorn log in {tempfile.gettempdir()})")


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


def load(port: int, work: list[tuple[bytes, str]], concurrency: int) -> dict[str, float]:
    """Send every body once from `concurrency` keep-alive connections; time each answer."""
    times: list[float] = []
    failures = 0
    lock = threading.Lock()
    cursor = iter(range(len(work)))

    def client() -> None:
        nonlocal failures
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], 0
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            body, signature = work[index]
            started = time.perf_counter()
            conn.request("POST", "/webhooks/leaditio", body=body, headers={
                "Content-Type": "application/json", "X-Leaditio-Signature": signature})
            answer = conn.getresponse()
            answer.read()
            mine.append(time.perf_counter() - started)
            bad += answer.status != 200
        conn.close()
        with lock:
            times.extend(mine)
            failures += bad

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    times.sort()
    return {"rate": len(times) / elapsed, "p50": statistics.median(times) * 1000,
            "p99": times[int(len(times) * 0.99) - 1] * 1000, "failed": failures}


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


def run(name: str, app: str, work: list, concurrency: int, config: Path | None, crm: str | None) -> dict:
    env = {**os.environ, "BENCH_SECRET": SECRET}
    extra: list[subprocess.Popen] = []
    if config is not None:
        env["CONNECTOR_CONFIG"] = str(config)
        subprocess.run([sys.executable, "-m", "connector", "db", "upgrade"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        if crm:
            extra.append(subprocess.Popen([sys.executable, "-m", "connector", "worker"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", *GUNICORN, "--bind", f"127.0.0.1:{port}", app],
                              env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_up(port)
        load(port, work[:200], concurrency)  # warm up (distinct ids from the measured run)
        result = load(port, work[200:], concurrency)
    finally:
        for proc in [server, *extra]:
            proc.terminate()
        for proc in [server, *extra]:
            proc.wait(timeout=30)
    result["name"] = name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--gunicorn", default=" ".join(GUNICORN), help="gunicorn options for both apps")
    args = parser.parse_args()
    GUNICORN[:] = args.gunicorn.split()
    work = bodies(args.requests + 200)
    results = []
    results.append(run("bare Flask endpoint", "bench.bare_app:create_app()", work, args.concurrency, None, None))
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        results.append(run("connector (SQLite)", "connector.web:create_app()", work, args.concurrency,
                           write_config(Path(folder), None), None))
        os.chdir(ROOT)
    crm_port = free_port()
    crm = slow_crm(crm_port)
    try:
        wait_up(crm_port)
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            results.append(run("connector + CRM taking 1 s/call", "connector.web:create_app()", work,
                               args.concurrency, write_config(Path(folder), f"http://127.0.0.1:{crm_port}/leads"),
                               "slow"))
            os.chdir(ROOT)
    finally:
        crm.terminate()
    os.chdir(ROOT)
    print(f"\n{args.requests} signed webhooks, concurrency {args.concurrency}, gunicorn {' '.join(GUNICORN)}, "
          f"{os.cpu_count()} cores\n")
    print(f"{'run':34} {'accepted/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8}")
    for r in results:
        print(f"{r['name']:34} {r['rate']:11.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['failed']:8d}")
    bare, ours, slow = results
    print(f"\nthroughput vs bare endpoint: {ours['rate'] / bare['rate']:.2f} (aim >= 0.5)")
    print(f"p99 on SQLite: {ours['p99']:.1f} ms (aim < 25 ms)")
    print(f"p99 with a 1 s CRM / without: {slow['p99'] / ours['p99']:.2f} (delivery is asynchronous: ~1.0)")


if __name__ == "__main__":
    main()
