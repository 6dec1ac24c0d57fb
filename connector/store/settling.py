"""Settling a batch: the worker's verdicts applied in one transaction, a statement per kind of change.

The statements are written once per dialect and run with `executemany` on the driver's cursor, as the
webhook's insert is (eventlog.py). Built per verdict with SQLAlchemy's expression language, the four
statements of a delivered lead (the row, the lead's state, the attempt history and its trimming) cost
about 2.5 ms of CPU per lead, most of it building and hashing the statements: more than the CRM
call itself. Here a batch of 20 costs one round trip per statement kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from connector.store.claiming import Verdict
from connector.store.schema import ATTEMPTS_KEPT, DELIVERED, PENDING

_compact_json = json.JSONEncoder(separators=(",", ":")).encode


class Settler:
    """The settle statements for one dialect; `settle` runs them on a DBAPI cursor in the caller's transaction."""

    def __init__(self, paramstyle: str, postgres: bool):
        m = "%s" if paramstyle in ("format", "pyformat") else "?"
        self.postgres = postgres
        # Rows this owner still leases: a worker whose lease ran out changes nothing another worker did since.
        self.held = (f"SELECT id FROM deliveries WHERE lease_owner = {m} AND id IN ({{ids}})"
                     + (" FOR UPDATE" if postgres else ""))
        self.mark = m
        # A verdict's None leaves that column as it was (Verdict.changes()).
        self.update = f"""
            UPDATE deliveries SET state = {m},
                   last_error = COALESCE({m}, last_error), last_error_code = COALESCE({m}, last_error_code),
                   attempts = COALESCE({m}, attempts), first_failed_at = COALESCE({m}, first_failed_at),
                   next_attempt_at = COALESCE({m}, next_attempt_at), crm_id = COALESCE({m}, crm_id),
                   written_at = COALESCE({m}, written_at), speed_to_lead = COALESCE({m}, speed_to_lead),
                   updated_at = {m}, lease_owner = NULL, lease_until = NULL
            WHERE id = {m} AND lease_owner = {m}"""
        # Only a newer event moves the lead's state on (a forced replay of an older one does not): ties by event id.
        newer = ("(excluded.last_occurred_at > lead_state.last_occurred_at OR "
                 "(excluded.last_occurred_at = lead_state.last_occurred_at AND "
                 "excluded.last_event_id > COALESCE(lead_state.last_event_id, 0)))")
        self.advance = f"""
            INSERT INTO lead_state (destination, lead_key, last_occurred_at, last_event_id, crm_id, updated_at)
            VALUES ({m}, {m}, {m}, {m}, {m}, {m})
            ON CONFLICT (destination, lead_key) DO UPDATE SET
                last_occurred_at = CASE WHEN {newer} THEN excluded.last_occurred_at
                                        ELSE lead_state.last_occurred_at END,
                last_event_id = CASE WHEN {newer} THEN excluded.last_event_id ELSE lead_state.last_event_id END,
                crm_id = COALESCE(excluded.crm_id, lead_state.crm_id),
                updated_at = excluded.updated_at"""
        self.note = f"""
            INSERT INTO delivery_attempts (delivery_id, at, owner, state, next_attempt_at, error_code, error,
                                           crm_id, summary)
            VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})"""
        # One history row per verdict, keeping the newest ATTEMPTS_KEPT of the delivery.
        self.trim = f"""
            DELETE FROM delivery_attempts WHERE delivery_id = {m} AND id < (
                SELECT id FROM delivery_attempts WHERE delivery_id = {m}
                ORDER BY id DESC LIMIT 1 OFFSET {ATTEMPTS_KEPT - 1})"""

    def settle(self, cursor: Any, owner: str, verdicts: Sequence[Verdict], now: float) -> set[int]:
        """Returns the delivery ids whose verdict applied (those this owner still held)."""
        if not verdicts:
            return set()
        ids = [v.item.delivery_id for v in verdicts]
        cursor.execute(self.held.format(ids=", ".join(self.mark for _ in ids)), [owner, *ids])
        held = {int(row[0]) for row in cursor.fetchall()}
        mine = [v for v in verdicts if v.item.delivery_id in held]
        if not mine:
            return set()
        cursor.executemany(self.update, [
            (v.state, v.last_error, v.last_error_code, v.attempts, v.first_failed_at, v.next_attempt_at, v.crm_id,
             v.written_at, v.speed_to_lead, now, v.item.delivery_id, owner) for v in mine])
        delivered = [v for v in mine if v.state == DELIVERED]
        if delivered:
            cursor.executemany(self.advance, [
                (v.item.destination, v.item.lead_key, v.item.occurred_at, v.item.event_id, v.crm_id, now)
                for v in delivered])
        cursor.executemany(self.note, [
            (v.item.delivery_id, now, owner[:200], v.state, v.next_attempt_at if v.state == PENDING else None,
             v.last_error_code, v.last_error, v.crm_id,
             _compact_json(v.summary) if v.summary is not None else None) for v in mine])
        cursor.executemany(self.trim, [(v.item.delivery_id, v.item.delivery_id) for v in mine])
        return {v.item.delivery_id for v in mine}
