"""Backfill checkpoints: where a run over a marketplace's lead list got to, saved with the page it covers.

`save` takes the caller's connection, so a page's events and its checkpoint commit together (or not at all).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import backfill_checkpoints

WHERE = (backfill_checkpoints.c.source, backfill_checkpoints.c.job_key)


def load(conn: Connection, source: str, job_key: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(backfill_checkpoints).where(WHERE[0] == source, WHERE[1] == job_key)).first()
    if row is None:
        return None
    return {"params": json.loads(row.params), "state": json.loads(row.state), "done": bool(row.done),
            "updated_at": row.updated_at}


def every(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(backfill_checkpoints).order_by(backfill_checkpoints.c.updated_at.desc()))
    return [{"source": row.source, "job_key": row.job_key, "params": json.loads(row.params),
             "state": json.loads(row.state), "done": bool(row.done), "updated_at": row.updated_at} for row in rows]


def save(conn: Connection, insert: Callable[..., Any], source: str, job_key: str, params: dict[str, Any],
         state: dict[str, Any], done: bool) -> None:
    stmt = insert(backfill_checkpoints).values(source=source, job_key=job_key, params=json.dumps(params),
                                               state=json.dumps(state), done=done, updated_at=time.time())
    conn.execute(stmt.on_conflict_do_update(
        index_elements=list(WHERE),
        set_={"params": stmt.excluded.params, "state": stmt.excluded.state, "done": stmt.excluded.done,
              "updated_at": stmt.excluded.updated_at}))


def delete(conn: Connection, source: str, job_key: str) -> None:
    conn.execute(backfill_checkpoints.delete().where(WHERE[0] == source, WHERE[1] == job_key))
