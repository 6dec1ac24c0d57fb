"""Salesforce: leads become Leads (or any object), upserted by an external id, up to 200 per call.

One call per batch: an sObject Collections upsert (`allOrNone: false`) answers per record, so only
the records Salesforce refused come back as errors, each in Salesforce's own words with the field
it blames. A single pending lead goes out as a plain upsert by external id (same cost: one call).
Upserting by our own lead id is what makes a retry or a replay update the Lead instead of
creating a second one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from simple_salesforce import Salesforce, format_external_id, format_soql
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMoreThanOneRecord,
)

from connector.destinations.base import Destination
from connector.destinations.salesforce.auth import http_session, login
from connector.destinations.salesforce.check import mapping_problems
from connector.destinations.salesforce.errors import json_body, record_error, request_error
from connector.destinations.salesforce.settings import (
    COLLECTION_LIMIT,
    REMOTE,
    SPLIT_CALLS,
    Settings,
)
from connector.destinations.salesforce.setup import create_fields
from connector.errors import ConfigProblem, ConnectorError, Permanent, RateLimited, classify, network_error
from connector.mapping import Mapping, shipped_mapping
from connector.pacing import Budget, Budgets, Window, local_budgets
from connector.records import OutboundRecord, Outcome, UpdatePolicy

log = logging.getLogger("connector.destinations.salesforce")
T = TypeVar("T")
DAILY = "daily"  # the org's API requests in a rolling 24 hours, as Sforce-Limit-Info counts them


class SalesforceDestination(Destination):
    kind = "salesforce"
    Settings = Settings
    max_batch = COLLECTION_LIMIT
    paced = True

    def __init__(self, name: str, settings: Settings, session: requests.Session | None = None,
                 budgets: Budgets | None = None):
        """`session`: an HTTP session to use instead of our own (build it with `http_session`)."""
        super().__init__(name, settings)
        # The org's daily allowance is shared by every process (and every other integration): one budget
        # per org and user, its limit and use learnt from each answer's Sforce-Limit-Info.
        org = f"{settings.domain}|{settings.instance_url or ''}|{settings.username or settings.consumer_key or ''}"
        self.budget: Budget = (budgets or local_budgets()).budget("salesforce", org, [Window(DAILY, None, 86400.0)])
        self.settings: Settings = settings
        self.http = session if session is not None else http_session(settings)
        self._client: Salesforce | None = None
        self._lock = threading.Lock()
        self._describes: dict[str, dict[str, Any]] = {}
        self.api_usage: tuple[int, int] | None = None  # (used, allowance) from Sforce-Limit-Info
        self._background = False  # the batch being sent came from a backfill or reconcile only

    # --- sending ------------------------------------------------------------------------
    def send(self, records: list[OutboundRecord]) -> list[Outcome]:
        if not records:
            return []
        self._background = all(record.background for record in records)
        existing = self._existing(records)
        prepared = [(r, self._key(r), r.payload(existing.get(r.delivery_id))) for r in records]
        # New leads and updates go in separate requests: the Assignment Rule header is per request,
        # and an update must never re-run the assignment rule (a rep working the lead keeps it).
        by_id: dict[int, Outcome] = {}
        for creating in (True, False):
            group = [p for p in prepared if p[0].known is not creating]
            by_id.update({o.delivery_id: o for o in self._upsert(group, creating=creating)})
        outcomes = [by_id[r.delivery_id] for r, _k, _p in prepared]
        outcomes = self._recreate_deleted(prepared, outcomes)
        return self._handle_converted(prepared, outcomes)

    def _upsert(self, prepared: list[tuple[OutboundRecord, str, dict[str, Any]]], *,
                creating: bool) -> list[Outcome]:
        if not prepared:
            return []
        if len(prepared) == 1:
            return [self._upsert_one(*prepared[0], creating=creating)]
        outcomes = []
        for start in range(0, len(prepared), COLLECTION_LIMIT):
            outcomes += self._upsert_many(prepared[start:start + COLLECTION_LIMIT], [SPLIT_CALLS], creating=creating)
        return outcomes

    def _key(self, record: OutboundRecord) -> str:
        """The external id value: the mapped one, or our own lead key when the mapping has none."""
        for name, value in record.values.items():
            if name.lower() == self.settings.external_id_field.lower() and value not in (None, ""):
                return str(value)
        return record.lead_key

    def _body(self, payload: dict[str, Any]) -> dict[str, Any]:
        ext = self.settings.external_id_field.lower()
        return {k: v for k, v in payload.items() if k.lower() != ext}

    def _headers(self, creating: bool) -> dict[str, str]:
        """Salesforce applies the active assignment rule to creates and updates alike unless told not to
        (REST API Developer Guide, "Assignment Rule Header"): so it is asked for on new leads only."""
        headers = {}
        if self.settings.on_duplicate == "allow_save":
            headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        if not creating or not self.settings.assignment_rules:
            headers["Sforce-Auto-Assign"] = "FALSE"
        else:
            headers["Sforce-Auto-Assign"] = self.settings.assignment_rule_id or "TRUE"
        return headers

    def _upsert_one(self, record: OutboundRecord, key: str, payload: dict[str, Any], *,
                    creating: bool) -> Outcome:
        s = self.settings

        def call(client: Salesforce) -> requests.Response:
            sobject = getattr(client, s.object)
            response = sobject.upsert(format_external_id(s.external_id_field, key), self._body(payload),
                                      raw_response=True, headers=self._headers(creating))
            self._note_usage(sobject.api_usage)
            return response

        try:
            response = self._call(call)
        except SalesforceMoreThanOneRecord as exc:
            ids = [str(url).rstrip("/").rsplit("/", 1)[-1] for url in exc.content] if isinstance(
                exc.content, list) else []
            return Outcome(record.delivery_id, error=classify(
                REMOTE, status=300, code="DUPLICATE_EXTERNAL_ID", field=s.external_id_field,
                message=f"{len(ids) or 'several'} {s.object} records have {s.external_id_field} = {key}: "
                        f"{', '.join(ids)}; merge or delete the extra ones, then retry this lead"))
        except SalesforceError as exc:
            if exc.status == 400 and isinstance(exc.content, list) and exc.content:
                error = self._record_error(exc.content, status=400)
                if not isinstance(error, ConfigProblem):  # this lead's own problem
                    return Outcome(record.delivery_id, error=error)
                raise error from None
            raise self._request_error(exc) from None
        body = json_body(response)
        return Outcome(record.delivery_id, crm_id=body.get("id") or record.crm_id,
                       created=body.get("created", response.status_code == 201))

    def _upsert_many(self, batch: list[tuple[OutboundRecord, str, dict[str, Any]]],
                     splits: list[int], *, creating: bool) -> list[Outcome]:
        """One Collections upsert; a request-level refusal of a mixed batch is narrowed by halving it,
        spending at most `splits[0]` more calls (shared by the halves) before giving up on the rest."""
        s = self.settings
        body = {"allOrNone": False, "records": [
            {"attributes": {"type": s.object}, **self._body(payload), s.external_id_field: key}
            for _record, key, payload in batch]}
        path = f"composite/sobjects/{s.object}/{s.external_id_field}"
        try:
            results = self._call(lambda c: self._restful(c, path, method="PATCH", json=body,
                                                         headers=self._headers(creating)))
        except SalesforceError as exc:
            error = self._request_error(exc)
            if not isinstance(error, Permanent):
                raise error from None
            if len(batch) == 1 or splits[0] < 2:
                return [Outcome(record.delivery_id, error=error) for record, _k, _p in batch]
            # One bad value (e.g. text in a number field) fails the whole request: find it, keep the rest.
            splits[0] -= 2
            middle = len(batch) // 2
            return (self._upsert_many(batch[:middle], splits, creating=creating)
                    + self._upsert_many(batch[middle:], splits, creating=creating))
        if not isinstance(results, list) or len(results) != len(batch):
            raise classify(REMOTE, status=502, message=f"Salesforce answered a {len(batch)}-record upsert with "
                                                       f"{len(results) if isinstance(results, list) else 'no'} results")
        outcomes = []
        for (record, _key, _payload), result in zip(batch, results, strict=True):
            if result.get("success"):
                outcomes.append(Outcome(record.delivery_id, crm_id=result.get("id"), created=result.get("created")))
            else:
                outcomes.append(Outcome(record.delivery_id, error=self._record_error(result.get("errors") or [],
                                                                                     status=200)))
        return outcomes

    # --- reading before writing (only when the mapping needs it) -----------------------
    def _existing(self, records: list[OutboundRecord]) -> dict[int, dict[str, Any]]:
        """Current values of `if_empty` fields per delivery, for leads we delivered before ({} when
        Salesforce no longer has the record). One query per batch, and only when needed: new leads
        and mappings without if_empty fields cost no extra call.
        """
        wanted = [r for r in records if r.known and any(
            r.policies.get(n) is UpdatePolicy.if_empty for n in r.values)]
        if not wanted:
            return {}
        s = self.settings
        columns = sorted({n for r in wanted for n in r.values if r.policies.get(n) is UpdatePolicy.if_empty}
                         - {s.external_id_field})
        keys = sorted({self._key(r) for r in wanted})
        soql = format_soql(f"SELECT Id, {s.external_id_field}, {', '.join(columns)} FROM {s.object} "
                           f"WHERE {s.external_id_field} IN {{keys}}", keys=keys)
        try:
            found = self._call(lambda c: self._query(c, soql))
        except SalesforceError as exc:
            raise self._request_error(exc) from None
        by_key: dict[str, dict[str, Any]] = {}
        lowered = {c.lower(): c for c in columns}
        for row in found:
            key = str(next((v for k, v in row.items() if k.lower() == s.external_id_field.lower()), ""))
            by_key[key] = {lowered.get(k.lower(), k): v for k, v in row.items() if k != "attributes"}
        return {r.delivery_id: by_key.get(self._key(r), {}) for r in wanted}

    # --- special cases -----------------------------------------------------------------
    def _recreate_deleted(self, prepared: list[tuple[OutboundRecord, str, dict[str, Any]]],
                          outcomes: list[Outcome]) -> list[Outcome]:
        """A lead we delivered before but that is gone from Salesforce (deleted or merged away) gets
        an update-only payload, which Salesforce refuses as REQUIRED_FIELD_MISSING. Send those again
        with every field, as for a new lead."""
        by_id = {o.delivery_id: o for o in outcomes}
        again = []
        for record, key, payload in prepared:
            error = by_id[record.delivery_id].error
            full = record.payload({})
            if error is not None and error.code == "REQUIRED_FIELD_MISSING" and record.known and full != payload:
                again.append((record, key, full))
        if not again:
            return outcomes
        log.info("%s: %d known leads are missing in Salesforce; creating them again", self.name, len(again))
        redone = self._upsert(again, creating=True)  # created anew: the assignment rule picks its owner
        by_id.update({o.delivery_id: o for o in redone})
        return [by_id[r.delivery_id] for r, _k, _p in prepared]

    def _handle_converted(self, prepared: list[tuple[OutboundRecord, str, dict[str, Any]]],
                          outcomes: list[Outcome]) -> list[Outcome]:
        converted = {o.delivery_id for o in outcomes if o.error is not None
                     and o.error.code == "CANNOT_UPDATE_CONVERTED_LEAD"}
        if not converted or self.settings.on_converted != "update_contact":
            return outcomes
        records = [(r, k) for r, k, _p in prepared if r.delivery_id in converted]
        updated = {o.delivery_id: o for o in self._update_contacts(records)}
        return [updated.get(o.delivery_id, o) for o in outcomes]

    def _update_contacts(self, records: list[tuple[OutboundRecord, str]]) -> list[Outcome]:
        """Converted Leads: write the lead's `always` fields to the Contact it became (same field names)."""
        s = self.settings
        soql = format_soql(f"SELECT Id, {s.external_id_field}, ConvertedContactId FROM {s.object} "
                           f"WHERE {s.external_id_field} IN {{keys}} AND IsConverted = true",
                           keys=sorted({k for _r, k in records}))
        try:
            rows = self._call(lambda c: self._query(c, soql))
            contact = self.describe("Contact")
        except SalesforceError as exc:
            raise self._request_error(exc) from None
        contact_of = {str(next((v for k, v in row.items() if k.lower() == s.external_id_field.lower()), "")):
                      row.get("ConvertedContactId") for row in rows}
        writable = {f["name"].lower(): f["name"] for f in contact.get("fields", []) if f.get("updateable")}
        updates, outcomes = [], []
        for record, key in records:
            contact_id = contact_of.get(key)
            fields = {writable[n.lower()]: v for n, v in record.values.items()
                      if n.lower() in writable and record.policies.get(n, UpdatePolicy.always) is UpdatePolicy.always}
            if not contact_id or not fields:
                reason = "it has no converted Contact" if not contact_id else "no mapped field exists on Contact"
                outcomes.append(Outcome(record.delivery_id, error=classify(
                    REMOTE, code="CANNOT_UPDATE_CONVERTED_LEAD",
                    message=f"the {s.object} was converted and {reason}; nothing was updated")))
                continue
            updates.append((record, contact_id, fields))
        if updates:
            body = {"allOrNone": False, "records": [{"attributes": {"type": "Contact"}, "Id": cid, **fields}
                                                    for _r, cid, fields in updates]}
            try:
                results = self._call(lambda c: self._restful(c, "composite/sobjects", method="PATCH", json=body))
            except SalesforceError as exc:
                raise self._request_error(exc) from None
            for (record, contact_id, _fields), result in zip(updates, results or [], strict=False):
                error = None if result.get("success") else self._record_error(result.get("errors") or [], status=200)
                outcomes.append(Outcome(record.delivery_id, error=error, crm_id=contact_id, created=False))
        return outcomes

    # --- errors (errors.py) ----------------------------------------------------------------
    def _request_error(self, exc: SalesforceError) -> ConnectorError:
        return request_error(exc, self.settings)

    def _record_error(self, errors: list[dict[str, Any]], status: int) -> ConnectorError:
        return record_error(errors, status, self.settings.on_duplicate)

    # --- the session ----------------------------------------------------------------------
    def _call(self, action: Callable[[Salesforce], T]) -> T:
        """Run `action` with a logged-in client; an expired session is renewed once, then repeated.

        Each call is charged to the org's shared budget first: past the org's daily allowance (past
        `pacing.BACKGROUND_SHARE` of it for leads a backfill or reconcile found) the destination pauses
        until the budget says, rather than spend requests other integrations of the org need.
        """
        refused = self.budget.take(self._background)
        if refused is not None:
            used, total = self.api_usage or (0, 0)
            raise RateLimited(f"Salesforce org's daily API requests are used up to our share ({used} of {total} "
                              f"in 24 hours); waiting {refused.wait:.0f}s", retry_after=max(60.0, refused.wait),
                              pause_destination=True, code="api_budget")
        for attempt in (1, 2):
            client = self._session(renew=attempt == 2)
            try:
                return action(client)
            except SalesforceExpiredSession as exc:
                if attempt == 1 and self.settings.auth != "session":
                    log.info("%s: Salesforce session expired; logging in again", self.name)
                    continue
                raise self._expired(exc, renewed=attempt == 2) from None
            except requests.RequestException as exc:
                raise network_error(REMOTE, exc) from None
        raise AssertionError("unreachable")

    def _session(self, renew: bool = False) -> Salesforce:
        with self._lock:
            if self._client is None or renew:
                self._client = login(self.settings, self.http)
            return self._client

    def _expired(self, exc: SalesforceExpiredSession, renewed: bool) -> ConnectorError:
        if renewed:
            why = "Salesforce refused a session it had just issued (is the user frozen, or its IP blocked?)"
        else:
            why = "the session_id has expired or was revoked; session auth cannot renew it: give a fresh one " \
                  "or use another auth mode"
        return classify(REMOTE, status=401, code="INVALID_SESSION_ID", message=why)

    def _restful(self, client: Salesforce, path: str, **kw: Any) -> Any:
        result = client.restful(path, timeout=self.settings.timeout, **kw)
        self._note_usage(client.api_usage)
        return result

    def _query(self, client: Salesforce, soql: str) -> list[dict[str, Any]]:
        result = client.query_all(soql, timeout=self.settings.timeout)
        self._note_usage(client.api_usage)
        return list(result.get("records") or [])

    def _note_usage(self, usage: Any) -> None:
        current = usage.get("api-usage") if usage else None
        if current is None:
            return
        self.api_usage = (current.used, current.total)
        self.budget.feed(DAILY, used=current.used, limit=current.total)
        if current.total and current.used >= 0.9 * current.total:
            log.warning("%s: Salesforce org has used %d of its %d daily API requests", self.name, current.used,
                        current.total)

    # --- describe and mapping checks -------------------------------------------------------
    def describe(self, object_name: str | None = None) -> dict[str, Any]:
        """The object's describe, once per destination (it is large and changes rarely)."""
        name = object_name or self.settings.object
        if name not in self._describes:
            self._describes[name] = self._call(lambda c: self._restful(c, f"sobjects/{name}/describe"))
        return self._describes[name]

    def check_against_crm(self, mapping: Mapping) -> list[str]:
        try:
            describe = self.describe()
        except SalesforceError as exc:
            error: ConnectorError = self._request_error(exc)
            return [f"{mapping.path}: cannot read {self.settings.object} from Salesforce: {error.describe()}"]
        except ConnectorError as exc:
            return [f"{mapping.path}: cannot check against Salesforce: {exc.describe()}"]
        return mapping_problems(mapping, describe, self.settings.object, self.settings.external_id_field)

    def setup(self, mapping: Mapping | None = None) -> list[str]:
        """Create the custom fields the mapping writes that the object lacks, and let our user edit them.

        Needs a user allowed to customize the org (Customize Application, Assign Permission Sets);
        safe to repeat: what exists is left alone.
        """
        mapping = mapping or shipped_mapping("salesforce.yaml")
        try:
            return create_fields(self, mapping)
        except SalesforceError as exc:
            raise self._request_error(exc) from None

    def record_url(self, crm_id: str) -> str | None:
        """The record in Lightning, on the instance this client is logged in to (no call to Salesforce)."""
        host = self._client.sf_instance if self._client is not None else None
        base = f"https://{host}" if host else self.settings.instance_url
        return f"{base.rstrip('/')}/lightning/r/{self.settings.object}/{quote(crm_id, safe='')}/view" if base else None

    def close(self) -> None:
        self.http.close()
