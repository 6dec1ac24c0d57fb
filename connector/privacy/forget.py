"""`connector forget`: erase one person from the connector, and with --crm from its destinations (POPIA s24).

Order: find the person (their events by keyed hash, store/people.py), ask the CRMs (their ids and
emails are read before the local erasure), then erase locally and leave a tombstone with the
person's keyed hashes, the time, the reason and the counts. The local erasure happens even when a
CRM fails, so the connector never keeps what it was asked to forget; the CRM step can be run again
with `--email`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.privacy.crm import CrmResult, erase_in_crms
from connector.runtime import Runtime


@dataclass
class ForgetReport:
    leads: list[tuple[str, str | None]]
    events: int
    places: dict[str, int]
    already_forgotten: int
    crm: list[CrmResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> bool:
        return any(result.failed for result in self.crm)

    def to_json(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "leads": [{"source": s, "lead_id": i} for s, i in self.leads],
                "events": self.events, "erased": self.places, "already_forgotten": self.already_forgotten,
                "crm": [vars(r) for r in self.crm], "failed": self.failed}


def forget(runtime: Runtime, *, email: str | None = None, phone: str | None = None, lead_id: str | None = None,
           source: str | None = None, reason: str = "", crm: bool = False, dry_run: bool = False) -> ForgetReport:
    store = runtime.store
    found = store.privacy.find(email=email, phone=phone, lead_id=lead_id, source=source)
    results: list[CrmResult] = []
    if crm:
        if dry_run:
            by_destination = {t.destination for t in found.targets}
            results = [CrmResult(f"destination {name}", "would erase" if name in by_destination else "would ask",
                                 f"{sum(t.destination == name for t in found.targets)} lead(s) delivered there")
                       for name in runtime.config.destinations]
        else:
            results = erase_in_crms(runtime, found)
    places = store.privacy.forget(found, runtime.redactor(reason or "no reason given"), dry_run=dry_run)
    return ForgetReport(found.leads, len(found.event_ids), places, found.already_forgotten, results, dry_run)
