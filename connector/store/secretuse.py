"""How each configured webhook secret has been used, from `events.signature_index`.

A stand-in for main's `Store.secret_usage(window)` and `reports.SecretUse` (bbde5f1), written before that
landed, with the same signature, record and meaning: when merging, delete this module and its
`Store.secret_usage`, keep main's; `connector.rotation` and the alerts only need `connector.store.SecretUse`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import events


@dataclass(frozen=True)
class SecretUse:
    """How one configured webhook secret of a source has been used (by `events.signature_index`)."""

    source: str
    index: int  # its position among the source's configured (non-empty) secrets
    last_used: float | None  # None: not in the events kept (`db prune` deletes old ones)
    uses_in_window: int


def secret_usage(conn: Connection, since: float) -> dict[tuple[str, int], SecretUse]:
    """Per (source, secret index) that verified any kept event: when last, and how often since `since`."""
    recent = sa.func.sum(sa.case((events.c.received_at >= since, 1), else_=0))
    rows = conn.execute(sa.select(events.c.source, events.c.signature_index, sa.func.max(events.c.received_at), recent)
                        .where(events.c.signature_index.is_not(None))
                        .group_by(events.c.source, events.c.signature_index)).all()
    return {(source, int(index)): SecretUse(source, int(index), last, int(count or 0))
            for source, index, last, count in rows}
