"""The fixed-window rate limit the marketplace fakes share, with the X-RateLimit-* headers it implies."""

from __future__ import annotations

import math
import threading
import time

from flask import Flask, Response, request

ENVIRON_KEY = "fake.rate_headers"  # where a fake's request gate leaves the rate headers of this request


def carry_rate_headers(app: Flask) -> None:
    """Every answer of `app`, errors included, carries the rate headers its gate left in the request."""

    @app.after_request
    def _rate_headers(response: Response) -> Response:
        for key, value in request.environ.get(ENVIRON_KEY, {}).items():
            response.headers.setdefault(key, value)
        return response


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
