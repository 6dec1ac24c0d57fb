"""The canonical lead and event: what every marketplace is normalised into, and what mappings read.

A mapping addresses a lead by path (`first_name`, `score_breakdown.phone_valid`); `source` and
`event` are added by the pipeline. Marketplaces declare any extra fields they carry in
`Marketplace.lead_fields`, so mapping checks can say "did you mean" for all of them, and warn
when a mapping reads a field that none of the marketplaces routed to its destination carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The Leaditio shape, which the webhook and the leads API share once contact details are folded in.
CORE_LEAD_FIELDS: tuple[str, ...] = (
    "id", "vertical", "sub_vertical", "first_name", "last_name", "suburb", "province",
    "service_type", "budget_range", "urgency", "phone", "email", "score", "score_tier",
    "score_breakdown", "delivered_at", "created_at",
)
PIPELINE_FIELDS: tuple[str, ...] = ("source", "event", "marketplace")


@dataclass(frozen=True)
class InboundEvent:
    """One event from a marketplace, ready to store. `lead` is already canonical."""

    source: str  # the configured source name, e.g. "leaditio"
    event_key: str  # the marketplace's own event id, or one derived from its content
    event_type: str  # "lead.new", "lead.updated", "lead.delivered", ...
    occurred_at: float  # epoch seconds: orders events of one lead and detects stale updates
    lead_id: str | None
    lead: dict[str, Any] = field(default_factory=dict)
    deliverable: bool = True  # False: an event type we store (so the sender stops) but do not deliver
    origin: str = "webhook"  # "webhook" or "backfill"


def mapping_input(lead: dict[str, Any], *, source: str, event: str, marketplace: str) -> dict[str, Any]:
    """The document a mapping reads: the lead's fields plus where it came from."""
    return {**lead, "source": source, "event": event, "marketplace": marketplace}


def get_path(document: dict[str, Any], path: str) -> Any:
    current: Any = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
        if current is None:
            return None
    return current
