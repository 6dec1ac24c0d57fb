"""What a backfill run is asked to do (Job), tells as it goes (Progress) and ends with (Result).

Kept apart from the engine so the CLI and the checkpoint read them without the engine's machinery.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counts:
    """What a backfill job did, over all its runs (kept in the checkpoint)."""

    listed: int = 0  # leads seen in the list (first pass)
    fetched: int = 0  # full leads read from the API
    already_present: int = 0  # stored with the same or newer data and queued to every routed destination
    enqueued: int = 0  # events recorded (new leads, updates, leads for destinations that lacked them)
    deliveries: int = 0  # deliveries those events created
    skipped: int = 0  # gone between list and detail, routed nowhere, or already recorded
    gone: int = 0  # of skipped: deleted between list and detail (404)
    unrouted: int = 0  # of skipped: no route or --destination takes them (recorded, not delivered)
    failed: int = 0  # refused by the API for this lead alone (the run goes on)
    pages: int = 0  # list pages read
    rechecked: int = 0  # leads seen again in an extra pass after the list moved
    mapping_errors: int = 0  # dry run only: leads a destination's mapping would refuse

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Job:
    """What to backfill. The job key (checkpoint name) is a hash of the source, filters and destinations."""

    source: str
    filters: dict[str, Any] = field(default_factory=dict)  # marketplace filter name -> value
    destinations: list[str] | None = None  # None: the source's routes

    def __post_init__(self) -> None:
        self.filters = {k: v for k, v in sorted(self.filters.items()) if v not in (None, "")}
        if self.destinations is not None:
            self.destinations = sorted(dict.fromkeys(self.destinations))

    @property
    def params(self) -> dict[str, Any]:
        return {"source": self.source, "filters": self.filters, "destinations": self.destinations}

    @property
    def key(self) -> str:
        text = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Sample:
    """One mapped record of a dry run (phone numbers and emails masked)."""

    destination: str
    lead_id: str
    event_type: str
    values: dict[str, Any] | None
    error: str | None = None


@dataclass
class Progress:
    """Handed to the progress callback after every lead."""

    done: int  # leads handled in this pass (resumed runs start at the checkpoint's count)
    total: int | None  # leads the list says match (None: unknown)
    counts: Counts
    requests: int  # API requests made by this run
    rate: float | None  # requests per second the API key allows
    passes: int


@dataclass
class Result:
    job: Job
    counts: Counts
    done: bool  # the whole list was covered
    resumed: bool  # continued from a checkpoint
    dry_run: bool
    requests: int = 0  # API requests in this run
    rate_limited: int = 0  # 429s in this run
    passes: int = 1
    warnings: list[str] = field(default_factory=list)  # leads may be missing: the run is not ok
    notes: list[str] = field(default_factory=list)  # worth telling, nothing wrong
    error: str | None = None  # why the run stopped early (resumable)
    failed_ids: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.counts.failed == 0 and not self.warnings


class Stop(Exception):
    """The run cannot go on (credentials, API down after retries); the checkpoint is kept."""
