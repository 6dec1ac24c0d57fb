"""HubSpot's daily request limit, counted per account day in the account's time zone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


class DailyQuota:
    """Requests counted per account day, and "spent until" once HubSpot says the day is over."""

    def __init__(self, limit: int | None, zone: ZoneInfo, clock: Callable[[], float] = time.time):
        self.limit, self.zone, self._clock = limit, zone, clock
        self._lock = threading.Lock()
        self._day_ends = 0.0
        self._used = 0
        self._spent_until = 0.0

    def next_midnight(self, now: float | None = None) -> float:
        local = datetime.fromtimestamp(self._clock() if now is None else now, self.zone)
        tomorrow = (local + timedelta(days=1)).date()
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.zone).timestamp()

    def take(self) -> float | None:
        """Count one request: None if it may go, else the time the quota comes back."""
        with self._lock:
            now = self._clock()
            if now < self._spent_until:
                return self._spent_until
            if now >= self._day_ends:
                self._day_ends, self._used = self.next_midnight(now), 0
            if self.limit is not None and self._used >= self.limit:
                return self._day_ends
            self._used += 1
            return None

    def spend_until(self, when: float) -> None:
        with self._lock:
            self._spent_until = max(self._spent_until, when)


_quota_lock = threading.Lock()
_quotas: dict[str, DailyQuota] = {}


def shared_quota(token_digest: str, limit: int | None, zone: ZoneInfo) -> DailyQuota:
    with _quota_lock:
        quota = _quotas.get(token_digest)
        if quota is None:
            quota = _quotas[token_digest] = DailyQuota(limit, zone)
        quota.limit, quota.zone = limit, zone
        return quota
