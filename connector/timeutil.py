"""Timestamps in and out: marketplaces send ISO 8601, the store keeps epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso(value: str | None) -> float | None:
    """ISO 8601 (with `Z`, an offset, or a bare date) -> epoch seconds; None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def age(seconds: float | None) -> str:
    """A human age such as `3d4h`, `12m`, `40s`."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def duration(seconds: float) -> str:
    """A duration for a message to people: `40 s`, `12 min`, `3.5 h`, `2.0 d`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
