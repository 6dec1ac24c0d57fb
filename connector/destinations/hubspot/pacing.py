"""HubSpot's limits as one shared budget per token (connector.pacing): the ten-second window, our own
`daily_limit` per account day, and what HubSpot's answers say about both.

HubSpot's rate headers on every answer (developers.hubspot.com/docs/api/usage-details, "Rate limits"):
`X-HubSpot-RateLimit-Max` and `-Remaining` for the rolling interval of `-Interval-Milliseconds`;
`-Daily` and `-Daily-Remaining` where the token has a daily limit (not for OAuth tokens: HubSpot
changelog, "Rate limit headers will now appear for OAuth authenticated calls"). A 429 carries
`policyName` TEN_SECONDLY_ROLLING or DAILY and no `Retry-After`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from connector.backoff import backoff
from connector.destinations.hubspot.errors import HubSpotError
from connector.destinations.hubspot.settings import Settings
from connector.errors import Paced, RateLimited
from connector.pacing import Budget, Budgets, Refused, Window, header_int

log = logging.getLogger("connector.destinations.hubspot")

# HubSpot counts a request from its arrival; we count it from before it leaves for a window longer by
# the margin (1%, and never under 0.1 s), and an answer that took longer than the margin restamps it to
# a whole window after the answer (pacing.restamp): however late it arrived, HubSpot forgets it first.
WINDOW_MARGIN, MIN_WINDOW_MARGIN = 0.01, 0.1
BURST, DAILY = "burst", "daily"  # the budget's windows: HubSpot's ten-secondly limit, our daily_limit
PAUSE_AFTER = 60.0  # a budget wait longer than this pauses the destination (every worker) instead of resting


class TokenBudget:
    """One destination's view of its token's shared budget."""

    def __init__(self, budgets: Budgets, token: str, settings: Settings):
        self.settings = settings
        self.zone = ZoneInfo(settings.account_timezone)
        self.margin = max(settings.rate_window * WINDOW_MARGIN, MIN_WINDOW_MARGIN)
        window = settings.rate_window + self.margin
        self.budget: Budget = budgets.budget("hubspot", token, [
            Window(BURST, settings.requests_per_10s, window),
            Window(DAILY, settings.daily_limit, 86400.0, resets=self.next_midnight)],
            scope=settings.host.rstrip("/"))

    def next_midnight(self, now: float) -> float:
        """When the account's day ends: HubSpot's daily limit resets at midnight in its time zone."""
        local = datetime.fromtimestamp(now, self.zone)
        tomorrow = (local + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.zone).timestamp()

    def clock(self, when: float) -> str:
        return datetime.fromtimestamp(when, self.zone).strftime("%Y-%m-%d %H:%M")

    def take(self, background: bool, waits: bool) -> None:
        """Charge one request, or raise what the worker does about a spent budget; `waits` (a command:
        setup, checks) sleeps through short waits instead."""
        while (refused := self.budget.take(background)) is not None:
            if waits and refused.wait <= PAUSE_AFTER:
                time.sleep(refused.wait)
                continue
            raise self._spent(refused)

    def _spent(self, refused: Refused) -> RateLimited:
        if refused.window == DAILY or refused.wait > PAUSE_AFTER:
            back_at = time.time() + refused.wait
            what = "our daily_limit" if refused.window == DAILY else "HubSpot's daily API limit"
            return RateLimited(f"{what} is used up until {self.clock(back_at)} (account time)",
                               retry_after=max(1.0, refused.wait), pause_destination=True, code="DAILY")
        return Paced(f"HubSpot's rate budget for this token is spent ({refused.window}); room again in "
                     f"{refused.wait:.2f}s", retry_after=refused.wait, code="budget")

    def answered(self, headers: Mapping[str, str] | None) -> None:
        """An answer (or none: a network error, the request may have arrived) to the last request taken."""
        headers = headers or {}
        self.budget.feed(BURST, remaining=header_int(headers, "X-HubSpot-RateLimit-Remaining"),
                         limit=header_int(headers, "X-HubSpot-RateLimit-Max"), answered=True,
                         slack=self.margin)
        if header_int(headers, "X-HubSpot-RateLimit-Daily-Remaining") == 0:
            self.budget.hold(self.next_midnight(time.time()) - time.time())  # the account's day is spent

    def rate_limited(self, error: HubSpotError, destination: str) -> None:
        """A 429: hold everyone sharing the token (every process) for the wait, which the error then carries."""
        if error.policy == "DAILY":
            back_at = time.time() + error.retry_after if error.retry_after else self.next_midnight(time.time())
            error.retry_after = max(1.0, back_at - time.time())
            log.warning("HubSpot daily API limit reached: destination %s waits until %s", destination,
                        self.clock(back_at))
        else:
            window = error.interval or self.settings.rate_window
            error.retry_after = error.retry_after if error.retry_after is not None else \
                backoff(1, 1.0, window, jitter=False)
            log.warning("HubSpot answered 429 (%s): every process using destination %s's token waits %.1fs",
                        error.policy, destination, error.retry_after)
        self.budget.hold(error.retry_after)


__all__ = ["BURST", "DAILY", "TokenBudget"]
