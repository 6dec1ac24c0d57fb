"""What a CRM is to the pipeline: it takes a batch of mapped records and answers per record.

Each destination kind is one subclass, listed by its `kind` in `connector.destinations.DESTINATIONS`.
A destination never retries or dead-letters: it returns an `Outcome` per record (or raises one
`connector.errors.ConnectorError` for the whole batch) and the worker decides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from connector.mapping import Mapping
from connector.records import OutboundRecord, Outcome


class DestinationSettings(BaseModel):
    """Base for each kind's settings: unknown keys are mistakes, reported with file and line."""

    model_config = ConfigDict(extra="forbid")


class Destination(ABC):
    kind: ClassVar[str]  # the `type:` value in config
    Settings: ClassVar[type[DestinationSettings]]
    max_batch: ClassVar[int] = 1  # the most records one call can carry
    paced: ClassVar[bool] = False  # takes `budgets=` (connector.pacing): its CRM limits requests per key

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

    def record_url(self, crm_id: str) -> str | None:
        """Where a person opens record `crm_id` in the CRM (the speed-to-lead notice); None: no link."""
        return None

    def close(self) -> None:  # noqa: B027 - most destinations hold nothing to release
        """Release connections; called when a worker stops."""
