"""`connector explain`: the story of one lead, every decision about it in time order, and why.

Built from what the store kept (events, deliveries, the attempt history) and from what the config
says now: routes are evaluated again against the stored lead, and the mapping runs again on the
newest event to show each field's value beside the decision recorded when it was sent. Field
values pass through the redactor unless the caller asks for personal data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from connector.config import RouteConfig
from connector.errors import ConfigError, Permanent
from connector.lead import get_path, mapping_input
from connector.records import field_decisions
from connector.runtime import Runtime
from connector.store.history import LeadHistory
from connector.store.schema import DEAD, DELIVERED, PENDING, SKIPPED, STALE
from connector.timeutil import iso

DUPLICATES = ("a duplicate (same event key or same body) is answered 200 and not stored again, so repeats of "
              "these events are not counted")

# A field's decision in words (the CLI's table and the console's lead page).
DECISIONS = {
    "written": "written",
    "if_empty": "sent; the CRM keeps its own value if it has one (if_empty)",
    "kept_on_create": "kept: on_create, and this was an update",
    "never": "not written (never)",
    "empty": "left empty",
}


@dataclass
class RouteDecision:
    destination: str
    took: bool
    why: str


@dataclass
class Attempt:
    at: float
    worker: str
    outcome: str  # delivered / retry / dead / stale / skipped
    text: str  # the outcome in words: "retry after 30 s: http_503: ..."
    retry_after: float | None = None
    error_code: str | None = None
    crm_id: str | None = None
    request: dict[str, Any] | None = None  # batch size, update or create, mapping file


@dataclass
class Delivery:
    id: int
    destination: str
    state: str
    attempts: list[Attempt]
    crm_id: str | None = None
    last_error: str | None = None
    written_at: float | None = None  # when the CRM last took it
    speed_to_lead: float | None = None  # the lead's first delivery here: seconds from the marketplace's delivery


@dataclass
class Event:
    id: int
    source: str
    event_type: str
    received_at: float
    origin: str  # webhook or backfill
    verified_by: str  # "secret #1" (the first in sources.<name>.secrets), or why none
    occurred_at: float  # the event time used for newest-wins ordering
    stated_occurred_at: float | None  # the marketplace's time when it was clamped to the receipt time
    routes: list[RouteDecision]
    deliveries: list[Delivery]


@dataclass
class Field:
    name: str
    policy: str
    decision: str
    value: Any = None
    note: str | None = None


@dataclass
class FieldSet:
    destination: str
    event_id: int
    update: bool
    recorded: bool  # the decisions are those recorded when it was sent (else worked out now)
    fields: list[Field]
    problem: str | None = None  # the mapping could not map the lead


@dataclass
class Story:
    lead_id: str
    sources: list[str]
    events: list[Event]
    crm_ids: dict[str, str]  # destination -> the CRM's record id
    fields: list[FieldSet]
    duplicates: str = DUPLICATES
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def route_decisions(routes: list[RouteConfig], source: str, event_type: str, lead: dict[str, Any],
                    destinations: list[str]) -> list[RouteDecision]:
    """Per destination: did a route from `source` take this event, and if not, why not."""
    out = []
    for destination in destinations:
        mine = [r for r in routes if r.source == source and r.destination == destination]
        if not mine:
            out.append(RouteDecision(destination, False, f"no route from {source} to {destination}"))
            continue
        if any(r.accepts(event_type, lead) for r in mine):
            out.append(RouteDecision(destination, True, "route matched"))
            continue
        out.append(RouteDecision(destination, False, "; ".join(_refusal(r, event_type, lead) for r in mine)))
    return out


def _refusal(route: RouteConfig, event_type: str, lead: dict[str, Any]) -> str:
    if route.events is not None and event_type not in route.events:
        return f"event type is {event_type}, route wants {route.events}"
    for path, wanted in route.where.items():
        if not route.model_copy(update={"events": None, "where": {path: wanted}}).accepts(event_type, lead):
            choices = wanted if isinstance(wanted, list) else [wanted]
            value = get_path(lead, path)
            return f"{path} is {'empty' if value in (None, '') else value}, route wants {choices}"
    return "route did not match"


def _attempt(row: dict[str, Any]) -> Attempt:
    state = row["state"]
    summary = json.loads(row["summary"]) if row["summary"] else {}
    request = {k: v for k, v in summary.items() if k != "fields"} or None
    error = f"{row['error_code']}: {row['error']}" if row["error_code"] and row["error"] else (row["error"] or "")
    retry_after = None
    if state == DELIVERED:
        text = f"delivered, CRM record {row['crm_id']}" if row["crm_id"] else "delivered"
        outcome = DELIVERED
    elif state == PENDING:
        retry_after = max(0.0, (row["next_attempt_at"] or row["at"]) - row["at"])
        text, outcome = f"retry after {retry_after:.0f} s: {error}", "retry"
    elif state == DEAD:
        text, outcome = f"dead letter: {error}", DEAD
    elif state == STALE:
        text, outcome = f"stale: {row['error']}", STALE
    elif state == SKIPPED:
        text, outcome = f"skipped: {error}", SKIPPED
    else:
        text, outcome = state, state
    return Attempt(row["at"], row["owner"], outcome, text, retry_after, row["error_code"], row["crm_id"], request)


def build(runtime: Runtime, lead_id: str, history: LeadHistory, *, show_personal: bool = False) -> Story:
    """The story of `lead_id` from what the store kept; values redacted unless `show_personal`."""
    config = runtime.config
    redact = (lambda text: text) if show_personal else runtime.redactor
    attempts: dict[int, list[dict[str, Any]]] = {}
    for row in history.attempts:
        attempts.setdefault(row["delivery_id"], []).append(row)
    by_event: dict[int, list[dict[str, Any]]] = {}
    for row in history.deliveries:
        by_event.setdefault(row["event_id"], []).append(row)
    destinations = list(config.destinations)
    events = []
    for row in history.events:
        lead = json.loads(row["lead_json"])
        index = row["signature_index"]
        verified = (f"secret #{index + 1} of sources.{row['source']}.secrets" if index is not None else
                    "no signature: fetched from the marketplace's API" if row["origin"] != "webhook" else
                    "not recorded")
        deliveries = [Delivery(d["id"], d["destination"], d["state"], [_attempt(a) for a in attempts.get(d["id"], [])],
                               d["crm_id"], redact(d["last_error"] or "") or None, d.get("written_at"),
                               d.get("speed_to_lead"))
                      for d in by_event.get(row["id"], [])]
        routes = route_decisions(config.routes, row["source"], row["event_type"], lead, destinations) \
            if row["deliverable"] else []
        for decision in routes:
            decision.why = redact(decision.why)
        events.append(Event(row["id"], row["source"], row["event_type"], row["received_at"], row["origin"], verified,
                            row["occurred_at"], row["stated_occurred_at"], routes, deliveries))
    crm_ids = {s["destination"]: s["crm_id"] for s in history.states if s["crm_id"]}
    story = Story(lead_id, sorted({e.source for e in events}), events, crm_ids, [])
    story.fields = _fields(runtime, history, redact)
    taken = {(e.id, d.destination) for e in events for d in e.deliveries}
    for event in events:
        for decision in event.routes:
            if decision.took != ((event.id, decision.destination) in taken):
                story.notes.append(f"event {event.id}: the routes in the config now {'take' if decision.took else 'do not take'}"
                                   f" it for {decision.destination}, but when it arrived they "
                                   f"{'did not' if decision.took else 'did'} (the config changed since)")
    for row in history.events:
        if row.get("erased_at") is not None:
            story.notes.append(f"event {row['id']}: its personal data was replaced by markers ({row['erased_why']}, "
                               f"{iso(row['erased_at'])}): values shown as [erased], and it cannot be replayed")
    return story


def _fields(runtime: Runtime, history: LeadHistory, redact: Any) -> list[FieldSet]:
    """Per destination, the newest event's mapped record with each field's decision."""
    events = {e["id"]: e for e in history.events}
    newest: dict[str, dict[str, Any]] = {}
    for delivery in history.deliveries:
        event = events[delivery["event_id"]]
        current = newest.get(delivery["destination"])
        if current is None or (event["occurred_at"], event["id"]) > (events[current["event_id"]]["occurred_at"],
                                                                      current["event_id"]):
            newest[delivery["destination"]] = delivery
    recorded: dict[int, dict[str, Any]] = {}
    for row in history.attempts:
        if row["summary"] and row["state"] != STALE:
            recorded[row["delivery_id"]] = json.loads(row["summary"])  # the last one wins
    known = {s["destination"] for s in history.states}
    out = []
    for destination, delivery in sorted(newest.items()):
        event = events[delivery["event_id"]]
        summary = recorded.get(delivery["id"])
        update = bool(summary["update"]) if summary else destination in known
        fieldset = FieldSet(destination, event["id"], update, summary is not None, [])
        try:
            mapping = runtime.mapping(destination)
            source = event["source"]
            marketplace = runtime.config.sources[source].marketplace if source in runtime.config.sources else ""
            mapped = mapping.apply(mapping_input(json.loads(event["lead_json"]), source=source,
                                                 event=event["event_type"], marketplace=marketplace))
        except (ConfigError, Permanent, KeyError) as exc:
            fieldset.problem = redact(str(exc))
            out.append(fieldset)
            continue
        decisions = summary["fields"] if summary and summary.get("fields") else field_decisions(mapped, update)
        for name, entry in decisions.items():
            value = mapped.values.get(name)
            shown = redact(str(value)) if isinstance(value, str) else value
            fieldset.fields.append(Field(name, entry["policy"], entry["decision"], shown, entry.get("note")))
        out.append(fieldset)
    return out
