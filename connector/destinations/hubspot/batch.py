"""A batch upsert's answer read back onto its leads: results matched to the leads they are about, and a
refused batch's culprits isolated so the rest can go again (HubSpotDestination._deliver sends).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.destinations.hubspot import errors as answers
from connector.errors import ConfigProblem, ConnectorError, Retryable
from connector.records import OutboundRecord, Outcome

# The destination's logger, so its lines keep the name they had before this module was split out of it.
log = logging.getLogger("connector.destinations.hubspot.destination")


@dataclass
class Item:
    """One lead on its way."""

    record: OutboundRecord
    key: str  # the id property's value, as HubSpot compares it
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def trace(self) -> str:
        return str(self.record.delivery_id)


def results(data: Any, status: int, group: list[Item], key: Callable[[Any], str | None],
            id_property: str) -> dict[int, Outcome]:
    """200: every record settled; 207: an Outcome per record, and one HubSpot did not mention goes again.

    Results are matched by the id property each input sent in `properties` (HubSpot echoes no
    trace id on success, in no fixed order). A 200 is HubSpot's word that every input was
    written, so a record whose result cannot be matched is still settled, only without a contact id.
    """
    by_trace = {item.trace: item for item in group}
    by_key = {item.key: item for item in group}
    outcomes: dict[int, Outcome] = {}
    if data is None:  # a 2xx the SDK has no model for: nothing to read, the upsert is safe to repeat
        error = Retryable(f"HubSpot answered HTTP {status} without a batch result", code="no_result")
        return {item.record.delivery_id: Outcome(item.record.delivery_id, error=error) for item in group}
    for result in data.results or []:
        item = by_key.get(key((result.properties or {}).get(id_property)) or "") or \
            by_trace.get(str(getattr(result, "object_write_trace_id", None) or ""))
        if item is not None:
            outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id, crm_id=str(result.id),
                                                        created=bool(result.new))
    if status == 200:
        unmatched = [item for item in group if item.record.delivery_id not in outcomes]
        if unmatched:
            log.warning("HubSpot accepted %d record(s) of a batch without a result naming them; settled "
                        "without a contact id", len(unmatched))
        for item in unmatched:
            outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id)
        return outcomes
    for entry in getattr(data, "errors", None) or []:
        error = answers.from_batch_error(entry)
        for target in named(error, by_trace, by_key):
            outcomes[target.record.delivery_id] = Outcome(target.record.delivery_id, error=error.classified())
    for item in group:
        if item.record.delivery_id not in outcomes:
            outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id, error=Retryable(
                "HubSpot's answer did not mention this lead; it goes again", retry_after=5.0, code="no_result"))
    return outcomes


def named(error: answers.HubSpotError, by_trace: dict[str, Item], by_key: dict[str, Item]) -> list[Item]:
    named = []
    for value in error.ids():
        item = by_trace.get(value) or by_key.get(value) or by_key.get(value.lower())
        if item is not None and item not in named:
            named.append(item)
    return named


def isolate(error: answers.HubSpotError, group: list[Item],
            outcomes: dict[int, Outcome]) -> list[list[Item]]:
    """A whole batch refused: fail the records it names, return the groups to send again."""
    classified = error.classified()
    if isinstance(classified, ConfigProblem):
        raise classified  # the mapping or the id property is wrong: every lead would fail alike
    about_inputs = bool(error.problems or error.ids() or error.category == "CONFLICT"
                        or error.code not in (None, error.category))
    if not about_inputs:  # e.g. an object type HubSpot does not know: no lead is at fault
        raise ConfigProblem(f"{error.readable()} (HubSpot refused the whole request; nothing was written)",
                            code=error.code, status=error.status)
    if len(group) == 1:
        item = group[0]
        outcomes[item.record.delivery_id] = Outcome(item.record.delivery_id, error=classified)
        return []
    by_trace = {item.trace: item for item in group}
    by_key = {item.key: item for item in group}
    culprits: dict[int, ConnectorError] = {}
    for item in named(error, by_trace, by_key):
        culprits[item.record.delivery_id] = classified
    for problem in error.problems:
        for item in matching(problem, group):
            culprits.setdefault(item.record.delivery_id, answers.HubSpotError(
                status=error.status, message=str(problem.get("message") or error.message),
                category=error.category, code=problem.get("error"), field=problem.get("name")).classified())
    if culprits:
        rest = [item for item in group if item.record.delivery_id not in culprits]
        for delivery_id, failure in culprits.items():
            outcomes[delivery_id] = Outcome(delivery_id, error=failure)
        return [rest] if rest else []
    half = len(group) // 2  # nothing names the culprit: halve until it stands alone
    return [group[:half], group[half:]]


def matching(problem: dict[str, Any], group: list[Item]) -> list[Item]:
    """Inputs whose value of the blamed property appears in HubSpot's message about it."""
    name, message = problem.get("name"), str(problem.get("message") or "")
    if not name or not message:
        return []
    return [item for item in group if item.properties.get(name)
            and re.search(rf"(?<![\w@.+-]){re.escape(item.properties[name])}(?![\w@.-])", message)]
