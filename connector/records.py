"""The records that pass between mapping, worker and destinations.

They live below all three so that none of them imports another to name what it hands on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from connector.errors import ConnectorError


class UpdatePolicy(StrEnum):
    always = "always"  # written on create and on every update
    if_empty = "if_empty"  # on update, only where the CRM field is still empty
    on_create = "on_create"  # written when the record is created, never overwritten
    never = "never"  # never written: kept for preview, filters and exports


@dataclass
class OutboundRecord:
    """One delivery, mapped and ready for a CRM."""

    delivery_id: int
    lead_key: str  # "<source>:<lead id>": stable across events of one lead
    event_type: str
    values: dict[str, Any]  # every mapped field
    policies: dict[str, UpdatePolicy]
    known: bool = False  # this destination already took this lead from us: an update
    crm_id: str | None = None  # the CRM's id for it, when known
    background: bool = False  # found by a backfill or reconcile: paced behind live leads (connector.pacing)

    def payload(self, existing: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fields to write, after each field's update policy.

        `existing` is the CRM's current record when the destination could read it; without it an
        update writes only `always` fields (an `if_empty` field is written when the record is new).
        """
        creating = not self.known if existing is None else not existing
        out: dict[str, Any] = {}
        for name, value in self.values.items():
            policy = self.policies.get(name, UpdatePolicy.always)
            if policy is UpdatePolicy.never:
                continue
            if creating or policy is UpdatePolicy.always or (
                policy is UpdatePolicy.if_empty and existing is not None and existing.get(name) in (None, "")
            ):
                out[name] = value
        return out


@dataclass
class Outcome:
    delivery_id: int
    error: ConnectorError | None = None  # None: the CRM took it
    crm_id: str | None = None
    created: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class MappedRecord:
    """What a mapping makes of one lead, before the worker addresses it to a destination."""

    values: dict[str, Any]
    policies: dict[str, UpdatePolicy]
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # field -> why a transform left it empty


class Decision(StrEnum):
    """What became of one mapped field in one delivery, after its update policy (`connector explain`)."""

    written = "written"  # sent to the CRM
    if_empty = "if_empty"  # sent on an update, and the CRM writes it only where its field is still empty
    kept_on_create = "kept_on_create"  # on_create on an update: the CRM's value kept
    never = "never"  # never written
    empty = "empty"  # the lead had no usable value (see the mapping's note): nothing to write


def field_decisions(mapped: MappedRecord, known: bool) -> dict[str, dict[str, str]]:
    """Per mapped field: its policy, the decision, and the mapping's note; names only, never values.

    `known`: the destination took this lead before, so this delivery is an update.
    """
    out: dict[str, dict[str, str]] = {}
    for name, policy in mapped.policies.items():
        if name not in mapped.values:
            decision = Decision.empty
        elif policy is UpdatePolicy.never:
            decision = Decision.never
        elif not known or policy is UpdatePolicy.always:
            decision = Decision.written
        elif policy is UpdatePolicy.if_empty:
            decision = Decision.if_empty
        else:
            decision = Decision.kept_on_create
        entry = {"policy": str(policy), "decision": str(decision)}
        if name in mapped.notes:
            entry["note"] = mapped.notes[name]
        out[name] = entry
    return out
