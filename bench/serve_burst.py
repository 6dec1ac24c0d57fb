"""Does `connector serve` (SQLite) keep delivering while it receives a burst? Deliveries/s vs arrivals/s.

    .venv/bin/python bench/serve_burst.py [--seconds 15] [--rate 0] [--concurrency 8] [--threads 2]

`connector serve` (receiver and worker threads in one process, SQLite) takes signed webhooks for
`--seconds` from `--concurrency` keep-alive connections, as fast as it answers (`--rate 0`) or at
`--rate` webhooks/s in all, while its worker delivers them to the fake HTTP CRM (a process of its
own, answering at once). Each second it prints the webhooks answered and the leads the CRM received;
then the totals over the burst, the ratio delivered / received during the burst (1.0: delivery kept
pace) and how long the backlog took to clear after the burst.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import CrmProcess, connector, free_port, stop_all, wait_up, webhook, write_config  # noqa: E402


class Load:
    """`concurrency` threads posting signed webhooks until told to stop; counts the 200s."""

    def __init__(self, port: int, concurrency: int, rate: float):
        self.port, self.rate = port, rate
        self.answered = 0
        self.failed = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._started = 0.0
        self.threads = [threading.Thread(target=self._post, daemon=True) for _ in range(concurrency)]
        self.run = uuid.uuid4().hex[:6]

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def _ticket(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _post(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            index = self._ticket()
            if self.rate:
                wait = self._started + index / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            body, signature = webhook(index, self.run)
            try:
                conn.request("POST", "/webhooks/leaditio", body=body,
                             headers={"Content-Type": "application/json", "X-Leaditio-Signature": signature})
                answer = conn.getresponse()
                answer.read()
                ok = answer.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                ok = False
            with self._lock:
                self.answered += ok
                self.failed += not ok
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=0, help="webhooks/s in all (0: as fast as answered)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="serve's worker threads")
    parser.add_argument("--poll-only", action="store_true", help="worker.instant_wakeup: false")
    args = parser.parse_args()
    crm = CrmProcess()
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = write_config(Path(folder), f"sqlite:///{folder}/connector.db", crm.url, threads=args.threads,
                                  instant_wakeup=not args.poll_only)
            port = free_port()
            serve = connector(config, "serve", "--port", str(port))
            try:
                wait_up(port)
                time.sleep(1.0)
                burst(port, crm, args)
            finally:
                stop_all([serve])
    finally:
        crm.stop()


def burst(port: int, crm: CrmProcess, args: argparse.Namespace) -> None:
    load = Load(port, args.concurrency, args.rate)
    print(f"serve on SQLite, {args.threads} worker threads; burst of {args.seconds:g} s from {args.concurrency} "
          f"connections at {f'{args.rate:g}/s' if args.rate else 'full speed'}")
    print("  second   answered/s   delivered/s")
    start = time.monotonic()
    load.start()
    last_answered, last_delivered = 0, crm.count()
    first_delivered = last_delivered
    for second in range(1, int(args.seconds) + 1):
        time.sleep(max(0.0, start + second - time.monotonic()))
        answered, delivered = load.answered, crm.count()
        print(f"  {second:6d}   {answered - last_answered:10d}   {delivered - last_delivered:11d}")
        last_answered, last_delivered = answered, delivered
    load.stop.set()
    for thread in load.threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - start
    answered, during = load.answered, crm.count() - first_delivered
    while crm.count() - first_delivered < answered and time.monotonic() - start < elapsed + 300:
        time.sleep(0.1)
    cleared = time.monotonic() - start - elapsed
    print(f"  burst: {answered} answered ({answered / elapsed:.0f}/s, {load.failed} failed), {during} delivered "
          f"({during / elapsed:.0f}/s) during it")
    print(f"  delivered / answered during the burst: {during / max(answered, 1):.2f}; "
          f"backlog cleared {cleared:.1f} s after it ({crm.count() - first_delivered} delivered in all)")


if __name__ == "__main__":
    main()
