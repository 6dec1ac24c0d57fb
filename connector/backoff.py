"""How long to wait before the next try: the one backoff formula of the connector.

Used by the worker (retries and breaker probes), the marketplace API client (5xx and network errors)
and the HubSpot destination (a 429 without Retry-After). Exponential, capped, and jittered over the
top half so that many workers retrying together spread out instead of hitting the CRM in step.
"""

from __future__ import annotations

import random


def backoff(attempt: int, base: float, cap: float, *, jitter: bool = True) -> float:
    """Seconds before try number `attempt` (1-based): ~base, 2*base, 4*base ... up to cap, each in [0.5, 1.0] of that."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling * random.uniform(0.5, 1.0) if jitter else ceiling
