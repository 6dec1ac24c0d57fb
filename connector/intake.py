"""Where a lead enters the queue: the one path shared by webhooks and backfill.

Routes decide which destinations an event goes to; the store records the event and those
deliveries in one transaction, once, however often the same event arrives.
"""

from __future__ import annotations

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
