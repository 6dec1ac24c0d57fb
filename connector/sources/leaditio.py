"""Leaditio: `lead.new` / `lead.updated` webhooks signed with X-Leaditio-Signature (hex HMAC-SHA256)."""

from __future__ import annotations

import time
from typing import Any

from connector.lead import InboundEvent
from connector.sources.base import InvalidPayload, Marketplace, event_time


def canonical_lead(lead: dict[str, Any], contact: dict[str, Any] | None = None) -> dict[str, Any]:
    """Webhook (`lead` + `contact`) and API detail (contact inline) become the same document."""
    out = dict(lead)
    for key in ("phone", "email"):
        if contact and contact.get(key) is not None:
            out[key] = contact[key]
    return out


class Leaditio(Marketplace):
    name = "leaditio"
    signature_header = "X-Leaditio-Signature"
    deliverable_events = frozenset({"lead.new", "lead.updated"})

    def parse(self, body: bytes) -> InboundEvent:
        payload = self.load_json(body)
        event_type = payload.get("event")
        if not isinstance(event_type, str) or not event_type:
            raise InvalidPayload("payload has no 'event' type")
        lead = payload.get("lead")
        if not isinstance(lead, dict) or not lead.get("id"):
            raise InvalidPayload("payload has no 'lead' with an 'id'")
        contact = payload.get("contact") if isinstance(payload.get("contact"), dict) else None
        timestamp = payload.get("timestamp")
        occurred = event_time(timestamp, lead.get("delivered_at")) or time.time()
        lead_id = str(lead["id"])
        return InboundEvent(
            source=self.source_name,
            # Leaditio sends no event id: the event, lead and moment identify a delivery.
            event_key=f"{event_type}:{lead_id}:{timestamp or occurred}",
            event_type=event_type,
            occurred_at=occurred,
            lead_id=lead_id,
            lead=canonical_lead(lead, contact),
            deliverable=event_type in self.deliverable_events,
        )

    def sample_payload(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            "event": "lead.new",
            "timestamp": now,
            "lead": {
                "id": f"lead_test{int(time.time() * 1000) % 10**9}",
                "vertical": "solar",
                "sub_vertical": "installation",
                "first_name": "Thabo",
                "suburb": "Sandton",
                "province": "Gauteng",
                "score": 87,
                "score_tier": "hot",
                "service_type": "Solar Installation 10kW+",
                "budget_range": "R100,000–R150,000",
                "urgency": "asap",
                "score_breakdown": {"phone_valid": 10, "email_valid": 8, "suburb_match": 8},
                "delivered_at": now,
                "created_at": now,
            },
            "contact": {"phone": "+27823456789", "email": "thabo.m@example.com"},
        }
