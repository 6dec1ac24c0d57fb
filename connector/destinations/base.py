"""What a CRM is to the pipeline: it takes a batch of mapped records and answers per record.

Each destination kind is one subclass in one module of this package, found by its `kind`.
A destination never retries or dead-letters: it returns an `Outcome` per record (or raises one
`connector.errors.ConnectorError` for the whole batch) and the worker decides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from connector.errors import ConnectorError

if TYPE_CHECKING:
    from connector.mapping import Mapping


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


class DestinationSettings(BaseModel):
    """Base for each kind's settings: unknown keys are mistakes, reported with file and line."""

    model_config = ConfigDict(extra="forbid")


class Destination(ABC):
    kind: ClassVar[str]  # the `type:` value in config
    Settings: ClassVar[type[DestinationSettings]]
    max_batch: ClassVar[int] = 1  # the most records one call can carry

    registry: ClassVar[dict[str, type[Destination]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            Destination.registry[cls.kind] = cls

    def __init__(self, name: str, settings: DestinationSettings):
        self.name = name
        self.settings = settings

    @abstractmethod
    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        """Write the records; one Outcome per record, in any order, or raise for the whole batch."""

    def check_against_crm(self, mapping: Mapping) -> list[str]:
        """Problems the CRM itself would raise with this mapping (`mappings check --against-crm`)."""
        return [f"{self.kind} destinations cannot be checked against a CRM"]

    def setup(self, mapping: Mapping | None = None) -> list[str]:
        """Create in the CRM what the mapping needs (`connector crm setup`); returns what was done."""
        raise NotImplementedError(f"{self.kind} destinations have nothing to set up")

    def close(self) -> None:  # noqa: B027 - most destinations hold nothing to release
        """Release connections; called when a worker stops."""
