"""What one claim costs at 1k, 10k and 100k pending deliveries, on a fresh database with no ANALYZE.

    python bench/claim.py [--postgres URL] [--sizes 1000,10000,100000] [--batch 200] [--rounds 5]

For each database (SQLite in a temp file; PostgreSQL in a throwaway database), for each size: a
new database at the newest schema, `size` pending deliveries over size/3 leads (so most leads
have several events waiting), no statistics gathered, then `rounds` claims of `--batch` by one
worker (each released again so every round sees the same queue). Prints the median claim time
per size and the ratio of the largest size to the smallest; on PostgreSQL also the scan's plan.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.store import Store  # noqa: E402
from connector.store.schema import PENDING, deliveries, events, lead_state  # noqa: E402

DEST = "crm"


def fill(store: Store, size: int) -> None:
    now = time.time()
    chunk = 10_000
    with store.engine.begin() as conn:
        for start in range(0, size, chunk):
            ids = range(start, min(size, start + chunk))
            conn.execute(events.insert(), [
                {"id": i + 1, "source": "leaditio", "event_key": f"k{i}", "body_sha256": f"b{i}",
                 "event_type": "lead.updated", "lead_id": f"lead_{i // 3}", "occurred_at": now - size + i,
                 "received_at": now, "origin": "webhook", "deliverable": True,
                 "lead_json": f'{{"id": "lead_{i // 3}"}}'} for i in ids])
            conn.execute(deliveries.insert(), [
                {"event_id": i + 1, "destination": DEST, "lead_key": f"leaditio:lead_{i // 3}",
                 "occurred_at": now - size + i, "state": PENDING, "attempts": 0, "claims": 0,
                 "next_attempt_at": now - size + i, "force": False, "created_at": now, "updated_at": now}
                for i in ids])
            conn.execute(lead_state.insert(), [  # every lead was delivered once before
                {"destination": DEST, "lead_key": f"leaditio:lead_{i // 3}", "last_occurred_at": now - 2 * size,
                 "last_event_id": None, "crm_id": f"crm{i // 3}", "updated_at": now} for i in ids if i % 3 == 0])


def measure(url: str, size: int, batch: int, rounds: int) -> tuple[float, str]:
    store = Store(url)
    store.upgrade()
    fill(store, size)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        claimed = store.claim(DEST, batch, "bench", 60).claimed
        times.append(time.perf_counter() - started)
        with store.engine.begin() as conn:  # give them back: the next round sees the same queue
            conn.execute(deliveries.update().where(deliveries.c.lease_owner == "bench")
                         .values(lease_owner=None, lease_until=None, claims=0))
        assert len(claimed) == batch, len(claimed)
    plan = ""
    if store.is_postgres:
        params = {"dest": DEST, "now": time.time(), "after_at": -1e300, "after_id": 0, "n": batch}
        with store.engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + str(store._claimer.scan)), params))
    store.dispose()
    return statistics.median(times), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for database in ("sqlite", "postgresql"):
        figures = {}
        for size in sizes:
            if database == "sqlite":
                with tempfile.TemporaryDirectory() as folder:
                    figures[size], plan = measure(f"sqlite:///{folder}/bench.db", size, args.batch, args.rounds)
            else:
                name = f"connector_bench_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                try:
                    base = args.postgres.split("://", 1)[1].rsplit("/", 1)[0]
                    figures[size], plan = measure(f"postgresql+psycopg://{base}/{name}", size, args.batch,
                                                  args.rounds)
                finally:
                    with psycopg.connect(args.postgres, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"{database:10} {size:>7} pending: claim of {args.batch} in {figures[size] * 1000:7.1f} ms "
                  f"(median of {args.rounds})", flush=True)
        print(f"{database:10} ratio {sizes[-1]}/{sizes[0]}: {figures[sizes[-1]] / figures[sizes[0]]:.2f}")
        if plan:
            print("  scan plan at the largest size, no ANALYZE:\n    " + plan.replace("\n", "\n    "))


if __name__ == "__main__":
    main()
