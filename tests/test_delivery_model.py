"""Newest data wins and nothing acknowledged is lost, for any interleaving (hypothesis stateful test).

Hypothesis drives arrivals over real HTTP (new, updated, out of order, same-second, repeated
bodies), claims and deliveries by several workers, workers killed before or after the CRM wrote,
leases running out, and a CRM (over real HTTP) that answers 5xx, 429 with Retry-After, drops
connections or loses its answer after writing, and honours Idempotency-Key as Stripe does.

After draining, every acknowledged lead is in the CRM exactly once and holds the data of its
newest acknowledged event: the latest event time, ties to the later-received event.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import hypothesis.strategies as st
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from connector.runtime import Runtime
from connector.store.schema import DEAD, PENDING, deliveries, destination_pauses
from connector.timeutil import parse_iso
from connector.web import create_app
from connector.worker import Work, Worker
from fakes.server import serve
from tests.conftest import leaditio_payload, post_webhook
from tests.test_worker import http_setup

WORKERS = 3
LEADS = 2
FAULTS = {
    "5xx": lambda crm, n: crm.fail_next(503, times=n),
    "429": lambda crm, n: crm.fail_next(429, times=n, headers={"Retry-After": "1"}),
    "drop": lambda crm, n: crm.drop_next(n),
    "lose_answer": lambda crm, n: crm.lose_next_answer(n),
}


def test_newest_acknowledged_data_wins_under_any_interleaving(tmp_path, database_url, fake_crm):
    config, store = http_setup(tmp_path, database_url, fake_crm.url, worker={"breaker_threshold": 4})

    with serve(create_app(Runtime(config, store))) as receiver:

        class Delivery(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                run = uuid.uuid4().hex[:8]
                self.leads = [f"m{run}_{i}" for i in range(LEADS)]
                self.workers = [Worker(Runtime(config, store), owner=f"{run}:{i}") for i in range(WORKERS)]
                self.held: dict[int, Work | None] = {}
                self.bodies: list[dict[str, Any]] = []
                self.acked: dict[str, list[tuple[float, int, int]]] = {}  # lead -> (time, event id, score)

            @rule(lead=st.integers(0, LEADS - 1), second=st.integers(0, 3),
                  event=st.sampled_from(["lead.new", "lead.updated"]), score=st.integers(0, 5))
            def arrive(self, lead: int, second: int, event: str, score: int) -> None:
                payload = leaditio_payload(self.leads[lead], event=event, timestamp=f"2026-05-20T10:00:0{second}Z",
                                           score=score)
                answer = post_webhook(receiver, payload)
                assert answer.status_code == 200, answer.text
                self.bodies.append(payload)
                if answer.json()["status"] == "accepted":
                    at = parse_iso(payload["timestamp"])
                    self.acked.setdefault(self.leads[lead], []).append((at, answer.json()["event_id"], score))

            @rule(data=st.data())
            def arrive_again(self, data: st.DataObject) -> None:
                if self.bodies:
                    answer = post_webhook(receiver, data.draw(st.sampled_from(self.bodies)))
                    assert answer.status_code == 200 and answer.json()["status"] == "duplicate"

            @rule(w=st.integers(0, WORKERS - 1))
            def claim(self, w: int) -> None:
                if self.held.get(w) is None:
                    self.held[w] = self.workers[w].take("crm")

            @rule(w=st.integers(0, WORKERS - 1))
            def deliver(self, w: int) -> None:
                work = self.held.pop(w, None)
                if work is not None:
                    self.workers[w].deliver(work)

            @rule(w=st.integers(0, WORKERS - 1), after_sending=st.booleans())
            def kill(self, w: int, after_sending: bool) -> None:
                """SIGKILL: the batch is never settled (perhaps after the CRM wrote it); its lease runs out."""
                work = self.held.pop(w, None)
                worker = self.workers[w]
                if work is not None and after_sending:
                    worker._call("crm", [worker._address(item, worker._map(item, work.mapping)) for item in work.items])
                with store.engine.begin() as conn:
                    conn.execute(deliveries.update().where(deliveries.c.lease_owner == worker.owner)
                                 .values(lease_until=0.0))
                self.workers[w] = Worker(Runtime(config, store), owner=f"{worker.owner}+")

            @rule(kind=st.sampled_from(sorted(FAULTS)), times=st.integers(1, 3))
            def crm_fails(self, kind: str, times: int) -> None:
                FAULTS[kind](fake_crm, times)

            @rule()
            def time_passes(self) -> None:
                """Retries and pauses fall due (backoff, Retry-After, the circuit breaker's probe)."""
                with store.engine.begin() as conn:
                    conn.execute(deliveries.update().where(deliveries.c.state == PENDING)
                                 .values(next_attempt_at=0.0))
                    conn.execute(destination_pauses.update().values(until=0.0))

            @invariant()
            def one_delivery_in_flight_per_lead(self) -> None:
                with store.engine.connect() as conn:
                    busy = conn.execute(sa.select(deliveries.c.lead_key).where(
                        deliveries.c.state == PENDING, deliveries.c.lease_until >= time.time())
                        .group_by(deliveries.c.lead_key).having(sa.func.count() > 1)).all()
                assert busy == []

            def teardown(self) -> None:
                for w, work in list(self.held.items()):  # live workers finish their batches
                    if work is not None:
                        self.workers[w].deliver(work)
                fake_crm.script.clear()
                self.time_passes()
                Worker(Runtime(config, store)).drain(timeout=60)
                for lead, acked in self.acked.items():
                    key = f"leaditio:{lead}"
                    _, newest_event, newest_score = max(acked)
                    assert fake_crm.creates[key] == 1, (lead, fake_crm.creates[key])
                    assert fake_crm.records[key]["score"] == newest_score, (lead, acked, fake_crm.records[key])
                with store.engine.connect() as conn:
                    left = conn.execute(sa.select(deliveries.c.id, deliveries.c.state).where(
                        deliveries.c.lead_key.in_([f"leaditio:{lead}" for lead in self.leads]),
                        deliveries.c.state.in_([PENDING, DEAD]))).all()
                assert left == []

        run_state_machine_as_test(Delivery, settings=settings(
            max_examples=20, stateful_step_count=25, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
