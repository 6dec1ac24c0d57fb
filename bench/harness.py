"""What bench/wake.py, bench/serve_burst.py and bench/scale.py share: a fake CRM in a process of its own
that stamps every call's arrival, a throwaway PostgreSQL database, a config, connector processes.

The CRM is `fakes.http_crm.FakeCrm` (one lead per POST, upsert by X-Lead-Key, an optional delay per
call), served by `fakes.server` in its own process so that it shares no GIL with what is measured.
It stamps each call with `time.monotonic()`, which on Linux is one clock for every process of the
machine, so a benchmark can subtract its own stamps from the CRM's.

    python bench/harness.py crm --port PORT [--delay SECONDS]   (what crm_process() runs)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789"  # the connector refuses secrets under 16 characters
LOG_DIR = Path(tempfile.gettempdir())
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, timeout: float = 60, hint: str = "") -> None:
    """Until something listens on `port`; `hint` says where to look when nothing does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout:.0f}s{hint}")


def webhook(index: int, run: str = "") -> tuple[bytes, str]:
    """A signed Leaditio webhook for lead `index` (ids unique per `run`)."""
    body = json.dumps({
        "event": "lead.new", "timestamp": "2026-05-20T10:23:44Z",
        "lead": {"id": f"lead_{run}{index:06d}", "vertical": "solar", "first_name": "Thabo", "suburb": "Sandton",
                 "province": "Gauteng", "score": 87, "score_tier": "hot", "service_type": "Solar Installation 10kW+",
                 "budget_range": "R100,000–R150,000", "urgency": "asap", "delivered_at": "2026-05-20T10:23:48Z"},
        "contact": {"phone": "+27823456789", "email": "thabo.m@example.com"}}).encode()
    return body, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# --- the CRM ---------------------------------------------------------------------------------
def crm_app(delay: float) -> Any:
    from fakes.http_crm import FakeCrm

    crm = FakeCrm()
    crm.delay = delay
    arrivals: dict[str, float] = {}
    calls = [0]
    lock = threading.Lock()

    @crm.app.get("/stats")
    def stats():  # noqa: ANN202
        with lock:
            return {"calls": calls[0], "leads": len(arrivals), "arrivals": arrivals}

    @crm.app.get("/count")
    def count():  # noqa: ANN202
        return {"calls": calls[0], "leads": len(arrivals)}

    inner = crm.app.wsgi_app

    def stamped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") in ("POST", "PUT", "PATCH"):
            at = time.monotonic()
            key = environ.get("HTTP_X_LEAD_KEY", "")
            with lock:
                calls[0] += 1
                arrivals.setdefault(key, at)
        return inner(environ, start_response)

    crm.app.wsgi_app = stamped
    return crm.app


class CrmProcess:
    """The fake CRM in a child process; `url` takes the leads, `stats()` says what arrived when."""

    def __init__(self, delay: float = 0.0):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "crm", "--port", str(self.port), "--delay", str(delay)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(self.port)
        self.url = f"http://127.0.0.1:{self.port}/leads"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=30) as answer:
            return json.load(answer)

    def count(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=30) as answer:
            return json.load(answer)["leads"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- databases, configs, connector processes ---------------------------------------------------
@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one run (SQLAlchemy URL), dropped afterwards."""
    import psycopg

    name = f"connector_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(folder: Path, database_url: str, crm_url: str, *, crm: dict[str, Any] | None = None,
                 **worker: Any) -> Path:
    """One Leaditio source routed to the HTTP CRM with the shipped mapping; `crm` and `worker` settings on top."""
    config = {
        "database": {"url": database_url},
        "worker": worker,
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${BENCH_SECRET}"]}},
        "destinations": {"crm": {"type": "http", "url": crm_url, "mapping": str(ROOT / "mappings" / "file.yaml"),
                                 **(crm or {})}},
        "routes": [{"source": "leaditio", "destination": "crm"}],
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def environment(config: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CONNECTOR_CONFIG": str(config), "BENCH_SECRET": SECRET, **extra}


def connector(config: Path, *args: str) -> subprocess.Popen:
    """`connector ARGS` with `config`; its log goes to LOG_DIR/bench-connector-<command>.log, not the figures."""
    log = (LOG_DIR / f"bench-connector-{args[0]}.log").open("wb")
    # BENCH_PROBE=script.py runs a script in place of `-m connector` (one that patches, then calls the CLI).
    command = [sys.executable, *(os.environ["BENCH_PROBE"].split() if os.environ.get("BENCH_PROBE") else ["-m", "connector"])]
    return subprocess.Popen([*command, *args], env=environment(config), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def gunicorn(config: Path, port: int, processes: int = 2) -> subprocess.Popen:
    """The receiver as the Procfile runs it, with `processes` gunicorn processes."""
    env = environment(config, WEB_CONCURRENCY=str(processes))
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "python:connector.gunicorn_conf",
                             "--log-level", "warning", "--bind", f"127.0.0.1:{port}", "connector.web:create_app()"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def upgrade(config: Path) -> None:
    subprocess.run([sys.executable, "-m", "connector", "db", "upgrade"], check=True, cwd=ROOT,
                   env=environment(config), stdout=subprocess.DEVNULL)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["crm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from fakes.server import Server

    Server(crm_app(args.delay), port=args.port, quiet=True).run()


if __name__ == "__main__":
    main()
