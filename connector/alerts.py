"""Alerts to where the team already is (Slack, Teams, email, Telegram, any webhook) through Apprise.

Sent once per change of state, never per retry: a destination starts failing or is paused (and when it
recovers), new dead letters (one alert per interval, counted by error code), a destination's oldest
pending lead waiting too long (and when that clears). States are read from the store and the last one
alerted is kept there (`alert_state`, compare and set), so any number of worker processes send each
change once. Each alert names the destination or lead and the command that explains it. A webhook
secret that has become safe to retire during a rotation is announced too (connector.rotation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from connector.config import AlertsConfig
from connector.rotation import SecretSignal, signals
from connector.store import Backlog, DeadLetters, Store
from connector.timeutil import duration, iso

log = logging.getLogger("connector.alerts")
OK, FAILING, LATE = "ok", "failing", "late"
RETIRE, IN_USE, QUIET = "retire", "in_use", "quiet"  # a webhook secret's states (connector.rotation)
DEAD_LETTERS = "deadletters"


def apprise_module() -> Any:
    """Apprise (with its plugins about 17 MiB) is imported by the processes that check or send alerts
    only: the receiver of a config without alert URLs never loads it."""
    import apprise

    return apprise


@dataclass(frozen=True)
class Alert:
    """One message: `key` and `state` are the change it reports; `kind` colours it (failure, success...)."""

    key: str
    state: str
    kind: str
    title: str
    body: str


class Sender(Protocol):
    def __call__(self, alert: Alert) -> bool: ...


class AppriseSender:
    """Every configured URL gets every alert; True when all of them took it."""

    def __init__(self, urls: list[str], redact: Callable[[str], str]):
        self._apprise = apprise_module().Apprise()
        for url in urls:
            self._apprise.add(url)
        self._redact = redact

    def __call__(self, alert: Alert) -> bool:
        types = apprise_module().NotifyType
        kinds = {"failure": types.FAILURE, "warning": types.WARNING, "success": types.SUCCESS, "info": types.INFO}
        return bool(self._apprise.notify(title=self._redact(alert.title), body=self._redact(alert.body),
                                         notify_type=kinds[alert.kind]))


def known_url(url: str) -> bool:
    """Whether Apprise understands `url` (checked at start-up, so a typo is a config error, not silence)."""
    return bool(apprise_module().Apprise().add(url))


class Alerter:
    def __init__(self, store: Store, settings: AlertsConfig, destinations: list[str], send: Sender,
                 secrets: Mapping[str, list[str]] | None = None):
        """`secrets`: per source, a label for each webhook secret (`rotation.labels`), for the retirement alerts."""
        self.store, self.settings, self.destinations, self.send = store, settings, destinations, send
        self.secrets = dict(secrets or {})
        self._lock = threading.Lock()  # worker threads share one alerter: one of them checks at a time
        self._next_check = 0.0

    def maybe_check(self) -> None:
        """From the worker loop: cheap unless `check_interval` has passed; never waits for another thread."""
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = time.monotonic() + self.settings.check_interval
            self.check()
        finally:
            self._lock.release()

    def check(self, now: float | None = None) -> list[Alert]:
        """Compare the store with the states last alerted; send (and return) an alert per change."""
        now = time.time() if now is None else now
        states = self.store.alert_states()
        health, pauses, backlogs = self.store.health(), self.store.pauses(), self.store.backlogs()
        sent: list[Alert] = []
        for name in self.destinations:
            failing = name in pauses or health.get(name, {}).get("failures", 0) >= self.settings.failing_after
            alert = self._destination(name, failing, health.get(name), pauses.get(name), backlogs.get(name))
            sent += self._change(states.get(alert.key), OK, alert)
            alert = self._backlog(name, backlogs.get(name), now)
            sent += self._change(states.get(alert.key), OK, alert)
        sent += self._dead_letters(states.get(DEAD_LETTERS), now)
        sent += self.check_secrets(states, now)
        return sent

    def announce(self, alert: Alert) -> bool:
        """Send a one-off alert (a backfill or reconcile run that finished): the process that ran it sends
        it once; no state is kept, and a failed send is logged, not retried."""
        if self.send(alert):
            log.info("alert sent: %s", alert.title)
            return True
        log.error("alert %r could not be sent", alert.title)
        return False

    def check_secrets(self, states: dict[str, str], now: float) -> list[Alert]:
        """Per webhook secret of a source with several: an alert when it becomes safe to retire, and when one
        that was is used again; other changes (a new secret adopted, uses pruned) are only recorded."""
        rotating = {source: names for source, names in self.secrets.items() if len(names) > 1}
        if not rotating:
            return []
        found = signals(rotating, self.store.secret_usage(self.settings.secret_unused_after), now,
                        self.settings.secret_unused_after)
        sent: list[Alert] = []
        for signal in found:
            old = states.get(signal.key)
            state = RETIRE if signal.safe_to_retire else IN_USE if signal.in_use else QUIET
            if state == RETIRE or (old == RETIRE and state == IN_USE):
                sent += self._change(old, IN_USE, self._secret(signal, state))
            elif state != (old or IN_USE):
                self.store.swap_alert_state(signal.key, old, state)
        current = {signal.key for signal in found}
        for key, old in states.items():  # a secret removed from the config: forget that it could be retired
            if key.startswith("secret:") and key not in current and old == RETIRE:
                self.store.swap_alert_state(key, old, QUIET)
        return sent

    def _secret(self, signal: SecretSignal, state: str) -> Alert:
        where = f"secret #{signal.number} of {signal.source} ({signal.label})"
        explain = "Explain: connector status (console: /console/secrets)"
        if state == RETIRE:
            return Alert(signal.key, RETIRE, "info", f"Webhook {where} can be retired",
                         f"Webhook {where}: {signal.why}.\nRemove it from sources.{signal.source}.secrets (and "
                         f"unset its variable), then restart.\n{explain}")
        return Alert(signal.key, IN_USE, "warning", f"Webhook {where} is in use again",
                     f"Webhook {where} verified {signal.recent_uses} webhook(s) again after it looked safe to "
                     f"retire: keep it in sources.{signal.source}.secrets until the marketplace signs only with "
                     f"the new one.\n{explain}")

    def _change(self, old: str | None, default: str, alert: Alert) -> list[Alert]:
        """Send `alert` if its state differs from the last one alerted and this process wins the change; a
        failed send puts the old state back, so the next check tries again."""
        before = old if old is not None else default
        if alert.state == before and old is not None:
            return []
        if not self.store.swap_alert_state(alert.key, old, alert.state):
            return []  # another worker process saw the same change first
        if alert.state == before:  # the first look at this key, and nothing to say
            return []
        if not self.send(alert):
            log.error("alert %r could not be sent; trying again at the next check", alert.title)
            self.store.swap_alert_state(alert.key, alert.state, before)
            return []
        log.info("alert sent: %s", alert.title)
        return [alert]

    def _destination(self, name: str, failing: bool, health: dict[str, Any] | None, pause: dict[str, Any] | None,
                     backlog: Backlog | None) -> Alert:
        key = f"destination:{name}"
        waiting = f"{backlog.pending} leads wait" if backlog else "no lead waits"
        if not failing:
            return Alert(key, OK, "success", f"Destination {name} recovered",
                         f"{name} accepts deliveries again; {waiting} and will be delivered in order. "
                         "Check: connector status (console: /console/destinations)")
        lines = [f"Deliveries to {name} are failing; {waiting}. Leads are kept and retried, none are lost."]
        if health:
            lines.append(f"{health['failures']} failed tries in a row since {iso(health['failing_since'])}; "
                         f"last error: {health['last_error']}")
        if pause:
            lines.append(f"Paused until {iso(pause['until'])} ({pause['kind']}): {pause['reason']}")
        lines.append(f"Explain: connector status (and connector deadletters list -d {name}); "
                     "console: /console/destinations")
        return Alert(key, FAILING, "failure", f"Destination {name} is failing", "\n".join(lines))

    def _backlog(self, name: str, backlog: Backlog | None, now: float) -> Alert:
        key, limit = f"pending:{name}", self.settings.oldest_pending_after
        if backlog is None or now - backlog.oldest_created_at <= limit:
            return Alert(key, OK, "success", f"Leads for {name} no longer wait too long",
                         f"No lead for {name} has waited longer than {duration(limit)} any more. "
                         "Check: connector status (console: /console/destinations)")
        return Alert(key, LATE, "warning", f"Leads for {name} wait too long",
                     f"The oldest of {backlog.pending} pending leads for {name} has waited "
                     f"{duration(now - backlog.oldest_created_at)} (the limit is {duration(limit)}).\n"
                     "Explain: connector status (console: /console/destinations)")

    def _dead_letters(self, old: str | None, now: float) -> list[Alert]:
        """At most one alert per interval: the dead letters since the end of the last one counted."""
        interval = self.settings.dead_letter_interval
        since = float(old) if old is not None else now - interval
        if now - since < interval:
            return []
        found = self.store.dead_letters_between(since, now)
        new = f"{now:.6f}"
        if not found:
            self.store.swap_alert_state(DEAD_LETTERS, old, new)
            return []
        alert = Alert(DEAD_LETTERS, new, "failure", dead_letter_title(found), dead_letter_body(found, since, now))
        return self._change(old, f"{since:.6f}", alert)


def dead_letter_title(found: dict[str, DeadLetters]) -> str:
    total = sum(d.total for d in found.values())
    return f"{total} new dead letter{'s' if total != 1 else ''} ({', '.join(sorted(found))})"


def dead_letter_body(found: dict[str, DeadLetters], since: float, now: float) -> str:
    lines = [f"Leads that will not be retried by themselves, {iso(since)} to {iso(now)}:"]
    for name in sorted(found):
        item = found[name]
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(item.by_code.items(), key=lambda c: -c[1]))
        lines.append(f"{name}: {item.total} ({codes}). List them: connector deadletters list -d {name} "
                     f"(console: /console/deadletters)")
        lines += [f"  e.g. connector explain {lead} --source {source} (console: /console/leads/{quote(lead, safe='')})"
                  for source, lead in item.leads]
    lines.append("Fix the cause, then: connector deadletters retry --all -d NAME")
    return "\n".join(lines)
