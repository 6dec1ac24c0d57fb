"""Console logins: wrong passwords counted per client and in all, lockouts, and the console's signing key.

Kept in the database, not in a process: gunicorn runs several workers and restarts them, and a
lockout that one worker forgets, or a restart clears, is no lockout. Each count is one upsert, so two
workers failing at once both count. A locked key is refused before its password is compared.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import console_logins, store_meta

EVERYONE = "all"
KEY_NAME = "console_key"


@dataclass(frozen=True)
class Limit:
    """`threshold` wrong passwords for `key` within the window lock `key` out."""

    key: str
    threshold: int


class Logins:
    def __init__(self, tx: Callable[[], AbstractContextManager[Connection]], insert: Callable[..., Any]):
        self._tx, self._insert = tx, insert

    def locked_until(self, keys: Sequence[str]) -> float | None:
        """The latest lockout still running among `keys`, or None."""
        now = time.time()
        with self._tx() as conn:
            until = conn.execute(sa.select(sa.func.max(console_logins.c.locked_until))
                                 .where(console_logins.c.key.in_(list(keys)),
                                        console_logins.c.locked_until > now)).scalar()
        return float(until) if until is not None else None

    def failed(self, limits: Sequence[Limit], window: float, duration: float) -> float | None:
        """Count one wrong password against each limit's key; returns the lockout it started, if any."""
        now = time.time()
        with self._tx() as conn:
            for limit in limits:
                self._count(conn, limit, now, window, duration)
        return self.locked_until([limit.key for limit in limits])

    def _count(self, conn: Connection, limit: Limit, now: float, window: float, duration: float) -> None:
        table = console_logins.c
        stmt = self._insert(console_logins).values(
            key=limit.key, failures=1, window_start=now,
            locked_until=now + duration if limit.threshold <= 1 else None, updated_at=now)
        expired = table.window_start < now - window
        failures = sa.case((expired, 1), else_=table.failures + 1)
        conn.execute(stmt.on_conflict_do_update(index_elements=[table.key], set_={
            "failures": failures,
            "window_start": sa.case((expired, now), else_=table.window_start),
            "locked_until": sa.case((failures >= limit.threshold, now + duration), else_=table.locked_until),
            "updated_at": now}))

    def succeeded(self, key: str) -> None:
        """A right password: that client's count starts again (the count of all clients does not)."""
        with self._tx() as conn:
            conn.execute(console_logins.delete().where(console_logins.c.key == key))

    def signing_key(self) -> str:
        """A random key made once per database: every worker and every restart signs with the same one."""
        with self._tx() as conn:
            conn.execute(self._insert(store_meta).values(key=KEY_NAME, value=secrets.token_hex(32))
                         .on_conflict_do_nothing(index_elements=[store_meta.c.key]))
            return str(conn.execute(sa.select(store_meta.c.value).where(store_meta.c.key == KEY_NAME)).scalar_one())


