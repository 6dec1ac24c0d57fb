"""Speed-to-lead notices: a short message to the sales team's channel when a new lead lands in the CRM.

Optional per route (`routes[].notify`): the CRM link, tier, vertical and suburb; phone and email only
when the route says so. A lead's first delivery to a destination sends it, once the delivery is settled,
from a thread of its own: a slow or failing channel never holds up or fails a delivery. A notice that
cannot be sent is logged (redacted) and counted in `connector_notices_total`, and not tried again;
a stopping worker gives queued notices up to 10 s, and drops the rest (the deliveries are safe in the
store; a notice is not worth holding a deploy for).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from connector.alerts import apprise_module
from connector.config import NotifyConfig, RouteConfig
from connector.logs import Redactor
from connector.metrics import NOTICES
from connector.store import Claimed
from connector.timeutil import duration

if TYPE_CHECKING:
    import apprise

log = logging.getLogger("connector.notify")
QUEUE_SIZE = 1000  # notices waiting for the channel; beyond this they are dropped (and counted)


@dataclass(frozen=True)
class Landed:
    """A lead's first delivery to a destination, as settled: what a notice says about it."""

    item: Claimed
    crm_id: str | None
    speed_to_lead: float | None
    record_url: Callable[[str], str | None]  # the destination's link to a CRM record (may ask the CRM once)


@dataclass(frozen=True)
class Notice:
    title: str
    body: str


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def compose(landed: Landed, settings: NotifyConfig, redact: Redactor) -> Notice:
    """The message. The lead's own words (tier, vertical, suburb) pass the full redactor, so a phone typed
    into a suburb stays out; phone and email appear only as the route asks; secrets never."""
    item, lead = landed.item, landed.item.lead
    tier, vertical, suburb = (_text(lead.get(k)) for k in ("score_tier", "vertical", "suburb"))
    tier, vertical, suburb = (redact(v) if v else None for v in (tier, vertical, suburb))
    what = " ".join(v for v in (tier, vertical) if v) or "new"
    title = f"New {what} lead in {item.destination}" + (f": {suburb}" if suburb else "")
    score = _text(lead.get("score"))
    lines = [f"Tier: {tier or '-'}" + (f" (score {redact(score)})" if score else ""),
             f"Vertical: {vertical or '-'}", f"Suburb: {suburb or '-'}"]
    if settings.phone and _text(lead.get("phone")):
        lines.append(f"Phone: {lead['phone']}")
    if settings.email and _text(lead.get("email")):
        lines.append(f"Email: {lead['email']}")
    link = landed.record_url(landed.crm_id) if landed.crm_id else None
    if link:
        lines.append(f"Open in the CRM: {link}")
    elif landed.crm_id:
        lines.append(f"CRM record: {landed.crm_id}")
    if landed.speed_to_lead is not None:
        lines.append(f"In the CRM {duration(landed.speed_to_lead)} after {item.source} delivered it")
    lead_id = _text(lead.get("id")) or item.lead_key.split(":", 1)[-1]
    lines.append(f"Its story: connector explain {lead_id} --source {item.source} "
                 f"(console: /console/leads/{quote(lead_id, safe='')})")
    return Notice(redact.secrets(title), redact.secrets("\n".join(lines)))


class Notifier:
    """Takes what landed from the worker threads (never waiting) and sends the notices from one thread."""

    def __init__(self, routes: list[RouteConfig], redact: Redactor, size: int = QUEUE_SIZE):
        self.routes, self.redact = routes, redact
        self._queue: queue.Queue[tuple[NotifyConfig, Landed]] = queue.Queue(size)
        self._channels: dict[tuple[str, ...], apprise.Apprise] = {}
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def settings_for(self, item: Claimed) -> list[NotifyConfig]:
        """The notify blocks of the routes that took this lead to this destination, one per channel set."""
        found: dict[tuple[str, ...], NotifyConfig] = {}
        for route in self.routes:
            if (route.notify and route.source == item.source and route.destination == item.destination
                    and route.accepts(item.event_type, item.lead)):
                found.setdefault(tuple(route.notify.url_values()), route.notify)
        return list(found.values())

    def landed(self, landed: Landed) -> None:
        for settings in self.settings_for(landed.item):
            if landed.speed_to_lead is not None and landed.speed_to_lead > settings.max_age:
                NOTICES.labels(landed.item.destination, "too_old").inc()  # a backfilled lead: no news to a rep
                continue
            try:
                self._queue.put_nowait((settings, landed))
            except queue.Full:
                NOTICES.labels(landed.item.destination, "dropped").inc()
                log.warning("speed-to-lead notice for delivery %s to %s dropped: %d notices already wait for "
                            "the channel", landed.item.delivery_id, landed.item.destination, self._queue.maxsize)
                continue
            self._ensure_thread()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notice was sent or given up (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            settings, landed = self._queue.get()
            try:
                self.send(settings, landed)
            finally:
                self._queue.task_done()

    def send(self, settings: NotifyConfig, landed: Landed) -> bool:
        """Compose and send one notice; never raises (the worker has long moved on)."""
        destination = landed.item.destination
        try:
            notice = compose(landed, settings, self.redact)
            sent = self._channel(settings).notify(title=notice.title, body=notice.body,
                                                  notify_type=apprise_module().NotifyType.INFO)
            problem = None if sent else "the channel did not take it"
        except Exception as exc:  # a link lookup or a plugin's bug: this notice only
            sent, problem = False, f"{type(exc).__name__}: {self.redact(str(exc))[:300]}"
        NOTICES.labels(destination, "sent" if sent else "failed").inc()
        if not sent:
            log.error("speed-to-lead notice for delivery %s to %s could not be sent (%s); the lead is in the CRM",
                      landed.item.delivery_id, destination, problem,
                      extra={"delivery_id": landed.item.delivery_id, "destination": destination})
        return bool(sent)

    def _channel(self, settings: NotifyConfig) -> apprise.Apprise:
        urls = tuple(settings.url_values())
        if urls not in self._channels:
            channel = apprise_module().Apprise()
            for url in urls:
                channel.add(url)
            self._channels[urls] = channel
        return self._channels[urls]
