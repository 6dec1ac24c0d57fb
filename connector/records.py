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
