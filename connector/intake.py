"""Where a lead enters the queue: the one path shared by webhooks and backfill.

Routes decide which destinations an event goes to; the store records the event and those
deliveries in one transaction, once, however often the same event arrives.
"""

from __future__ import annotations

from collections.abc import Iterable

from connector.config import Config
from connector.lead import InboundEvent, mapping_input
from connector.store import Recorded, Store


def destinations_for(config: Config, event: InboundEvent) -> list[str]:
    marketplace = config.sources[event.source].marketplace
    document = mapping_input(event.lead, source=event.source, event=event.event_type, marketplace=marketplace)
    seen: list[str] = []
    for route in config.routes_for(event.source):
        if route.destination not in seen and route.accepts(event.event_type, document):
            seen.append(route.destination)
    return seen


def accept(config: Config, store: Store, event: InboundEvent, body: bytes,
           signature_index: int | None = None) -> Recorded:
    return store.record_event(event, destinations_for(config, event), body=body, signature_index=signature_index)


def accept_many(config: Config, store: Store, items: Iterable[tuple[InboundEvent, bytes]], chunk: int = 500) -> int:
    """Queue many events (e.g. a benchmark's or an import's) a chunk per transaction; returns how many."""
    batch: list[tuple[InboundEvent, list[str], bytes]] = []
    count = 0
    for event, body in items:
        batch.append((event, destinations_for(config, event), body))
        if len(batch) == chunk:
            count += len(store.record_events(batch))
            batch = []
    return count + len(store.record_events(batch))
