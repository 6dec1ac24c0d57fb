"""Durations as CRM admins write them in YAML: `90`, `90s`, `15m`, `3d`.

Its own module because the config, the destinations and the CLI all read durations, and none of
them should import another for it.
"""

from __future__ import annotations

import re
from typing import Any

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def seconds(value: Any) -> float:
    """`90`, `90s`, `15m`, `3d` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = DURATION.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration (examples: 30s, 15m, 3d)")
    return float(match.group(1)) * _UNITS[match.group(2)]
