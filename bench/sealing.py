"""What sealing a webhook's body and lead with Fernet costs on the webhook path, side by side in one run.

    python bench/sealing.py [--events 2000]

Prints the microseconds per event of the seal alone (body + lead, as EventLog.record does), and of
recording events into SQLite without and with privacy.encryption_keys, with their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from connector.lead import InboundEvent
from connector.store import Screen, Store
from connector.store.sealing import Sealer


def payload(n: int) -> tuple[InboundEvent, bytes]:
    lead = {"id": f"L{n}", "first_name": "Thabo", "last_name": "Mokoena", "email": f"t{n}@example.com",
            "phone": "+27823456789", "suburb": "Sandton", "province": "Gauteng", "score": 87,
            "service_type": "Solar Installation 10kW+", "budget_range": "R100,000-R150,000"}
    body = json.dumps({"event": "lead.new", "timestamp": "2026-05-20T10:23:44Z", "lead": lead}).encode()
    return InboundEvent("leaditio", f"e{n}", "lead.new", time.time(), f"L{n}", lead), body


def record(folder: Path, name: str, keys: list[str], items: list[tuple[InboundEvent, bytes]]) -> float:
    store = Store(f"sqlite:///{folder / name}.db")
    store.upgrade()
    store.protect(keys, Screen(refuse_forgotten=True))
    start = time.perf_counter()
    for event, body in items:
        store.record_event(event, ["crm"], body=body)
    elapsed = time.perf_counter() - start
    store.dispose()
    return elapsed / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    items = [payload(n) for n in range(args.events)]
    sealer = Sealer([Fernet.generate_key().decode()])
    start = time.perf_counter()
    for event, body in items:
        sealer.seal_bytes(body)
        sealer.seal_text(json.dumps(event.lead))
    seal = (time.perf_counter() - start) / len(items) * 1e6
    plains, sealeds = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):  # interleaved, so a busy moment of the machine hits both alike
            plains.append(record(Path(folder), f"plain{round_}", [], items))
            sealeds.append(record(Path(folder), f"sealed{round_}", [Fernet.generate_key().decode()], items))
    plain, sealed = statistics.median(plains), statistics.median(sealeds)
    print(f"seal body + lead: {seal:.1f} us/event")
    print(f"record_event (SQLite, group commit), medians of {args.rounds} interleaved rounds: plain {plain:.0f} "
          f"us/event, sealed {sealed:.0f} us/event, ratio {sealed / plain:.2f} "
          f"(per round: {', '.join(f'{s / p:.2f}' for p, s in zip(plains, sealeds, strict=True))})")


if __name__ == "__main__":
    main()
