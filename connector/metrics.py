"""Prometheus metrics: counters where things happen, queue gauges read from the store at scrape time.

Under gunicorn (several processes) counters are aggregated through PROMETHEUS_MULTIPROC_DIR, which
our gunicorn settings create; queue figures come from the database, so they are right for every
process and every machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from connector.store import Store

RECEIVED = Counter("connector_webhooks_received", "Webhooks accepted and stored", ["source"])
REJECTED = Counter("connector_webhooks_rejected", "Webhooks refused", ["source", "reason"])
DUPLICATES = Counter("connector_webhooks_duplicate", "Webhooks already stored (answered 200, stored once)",
                     ["source"])
DELIVERY_OUTCOMES = Counter("connector_delivery_outcomes", "Delivery attempts by outcome",
                            ["destination", "outcome"])
# From the marketplace's delivery of a lead to its first write in the CRM: a sales team's first minutes count.
SPEED_TO_LEAD = Histogram("connector_speed_to_lead_seconds",
                          "Seconds from the marketplace's delivery of a lead to its first write in the CRM",
                          ["source", "destination"],
                          buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400))
NOTICES = Counter("connector_notices", "Speed-to-lead notices by outcome (sent, failed, dropped, too_old)",
                  ["destination", "outcome"])


class QueueCollector(Collector):
    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.store.status()
        depth = GaugeMetricFamily("connector_queue_depth", "Deliveries waiting to be sent")
        depth.add_metric([], status["queue_depth"])
        age = GaugeMetricFamily("connector_oldest_pending_age_seconds", "Age of the oldest waiting delivery")
        age.add_metric([], status["oldest_pending_age"] or 0.0)
        states = GaugeMetricFamily("connector_deliveries", "Deliveries by destination and state",
                                   labels=["destination", "state"])
        dead = GaugeMetricFamily("connector_dead_letters", "Deliveries in dead letters", labels=["destination"])
        paused = GaugeMetricFamily("connector_destination_paused", "1 while a destination is paused",
                                   labels=["destination", "kind"])
        for name, counts in status["destinations"].items():
            for state, count in counts.items():
                if state != "oldest_pending_age":
                    states.add_metric([name, state], count)
            dead.add_metric([name], counts.get("dead", 0))
        now = time.time()
        for name, pause in status["pauses"].items():
            paused.add_metric([name, pause["kind"]], 1.0 if pause["until"] > now else 0.0)
        failing = GaugeMetricFamily("connector_destination_failing", "1 while a destination's deliveries keep failing",
                                    labels=["destination"])
        failures = GaugeMetricFamily("connector_destination_consecutive_failures",
                                     "Transient delivery failures in a row", labels=["destination"])
        since = GaugeMetricFamily("connector_destination_failing_since_seconds",
                                  "Unix time of the first of those failures", labels=["destination"])
        next_try = GaugeMetricFamily("connector_destination_next_try_seconds",
                                     "Unix time of the next delivery attempt to a failing destination",
                                     labels=["destination"])
        for name, health in status["health"].items():
            failing.add_metric([name], 1.0)
            failures.add_metric([name], health["failures"])
            since.add_metric([name], health["failing_since"])
            if health["next_try"] is not None:
                next_try.add_metric([name], health["next_try"])
        yield from (depth, age, states, dead, paused, failing, failures, since, next_try)
        yield from self._reconcile()

    def _reconcile(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """From `reconcile_runs`, so a run in any worker process on any machine counts (a scheduled run
        happens in a worker process, which serves no /metrics of its own)."""
        recovered = CounterMetricFamily("connector_reconcile_recovered", "Leads reconcile runs found the marketplace "
                                        "had delivered but no webhook brought, and queued", labels=["source"])
        missing = GaugeMetricFamily("connector_reconcile_last_missing", "Leads the last finished reconcile run "
                                    "found missing", labels=["source"])
        finished = GaugeMetricFamily("connector_reconcile_last_finished_seconds",
                                     "Unix time the last reconcile run finished", labels=["source"])
        for source, total in self.store.reconcile_recovered_totals().items():
            recovered.add_metric([source], total)
        for source, run in self.store.latest_reconcile_runs(finished=True).items():
            missing.add_metric([source], run["missing"])
            finished.add_metric([source], run["finished_at"])
        yield from (recovered, missing, finished)


def render(store: Store) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported only in multiprocess mode: it reads PROMETHEUS_MULTIPROC_DIR, which gunicorn_conf sets first.
        from prometheus_client import multiprocess

        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    queue = CollectorRegistry()
    queue.register(QueueCollector(store))
    return generate_latest(counters) + generate_latest(queue)
