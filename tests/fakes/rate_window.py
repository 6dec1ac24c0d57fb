"""The fixed-window rate limit the marketplace fakes share, with the X-RateLimit-* headers it implies."""

from __future__ import annotations

import math
import threading
import time


class FixedWindow:
    def __init__(self) -> None:
        self._start, self._used = 0.0, 0
        self._lock = threading.Lock()

    def take(self, limit: int, window: float) -> tuple[dict[str, str], bool]:
        """Count one request; its rate headers, and whether it is inside the limit."""
        with self._lock:
            start = math.floor(time.time() / window) * window
            if start != self._start:
                self._start, self._used = start, 0
            allowed = self._used < limit
            self._used += 1 if allowed else 0
            return {"X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": str(max(0, limit - self._used)),
                    "X-RateLimit-Reset": f"{start + window:.3f}"}, allowed
