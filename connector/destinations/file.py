"""A local file as the CRM: JSON Lines or CSV, one row per lead, upserted by lead.

The quick start's destination: no credentials, and you can watch leads arrive with `tail -f`.
Rewrites go to a temporary file that replaces the old one, under a lock, so a crash or a second
worker never leaves a half-written file.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from connector.destinations.base import Destination, DestinationSettings
from connector.records import OutboundRecord, Outcome

KEY = "lead_key"
_LOCKS: dict[str, threading.Lock] = {}


class Settings(DestinationSettings):
    path: str = Field(description="file to write; relative paths are relative to the working directory")
    format: Literal["jsonl", "csv"] | None = Field(default=None, description="default: from the file's extension")


class FileDestination(Destination):
    kind = "file"
    Settings = Settings
    max_batch = 500

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.path = Path(settings.path)
        self.format = settings.format or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")

    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        with self._locked():
            rows = self.read()
            outcomes = []
            for record in records:
                existing = rows.get(record.lead_key)
                created = existing is None
                row = dict(existing or {KEY: record.lead_key})
                row.update(record.payload(existing or {}))
                rows[record.lead_key] = row
                outcomes.append(Outcome(record.delivery_id, crm_id=record.lead_key, created=created))
            self._write(rows)
        return outcomes

    def read(self) -> dict[str, dict[str, Any]]:
        """Every row, by lead key: the current records an upsert and `if_empty` fields are checked against."""
        if not self.path.exists():
            return {}
        with self.path.open(newline="", encoding="utf-8") as handle:
            if self.format == "csv":
                items: list[dict[str, Any]] = list(csv.DictReader(handle))
            else:
                items = [json.loads(line) for line in handle if line.strip()]
        return {item[KEY]: item for item in items}

    def _write(self, rows: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            if self.format == "csv":
                columns = list(dict.fromkeys(k for row in rows.values() for k in row))
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows.values())
            else:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows.values())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    @contextmanager
    def _locked(self):  # type: ignore[no-untyped-def]
        """One writer at a time: threads of this process, then other processes (fcntl)."""
        lock = _LOCKS.setdefault(str(self.path.resolve()), threading.Lock())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with lock, open(self.path.with_name(self.path.name + ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
