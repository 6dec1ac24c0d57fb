"""A local HubSpot CRM API that answers as api.hubapi.com does, for tests and the benchmark.

Real HTTP (werkzeug, in a thread; HTTPS with a trustme CA via `hubspot_server(tls=True)`). What it
speaks, with HubSpot's own status codes and body shapes (checked by running hubspot-api-client with
`client_side_validation=True` against it):

- `POST /crm/v3/objects/contacts/batch/upsert`: 200 `BatchResponseSimplePublicUpsertObject`
  (`results[].new` tells created from updated), or 207 `...WithErrors` when every input carries an
  `objectWriteTraceId` (multi-status; per-input errors name it in `context.objectWriteTraceId`).
  As HubSpot does, a successful result does NOT echo `objectWriteTraceId`, results come back in
  any order (HubSpot/hubspot-api-nodejs#190, "Batch Create results should be in the same order as
  the inputs": the maintainer answered "There is no way to do it"), and a result's `properties`
  hold only what the input's `properties` set (plus hs_object_id, createdate, lastmodifieddate):
  the idProperty value given as `id` is not echoed unless it is also in `properties`. So the
  only way to match a result to its input is to send the id property in `properties` too.
  207 only where HubSpot documents it: multi-status is turned on by a unique `objectWriteTraceId`
  per input (developers.hubspot.com/docs/api-reference/error-handling, "Multi-status errors");
  a 207 for an upsert carries the failed inputs in `errors` and the rest in `results`
  (a body of this shape is quoted in HubSpot/hubspot-api-ruby#403). `shuffle=False` keeps input
  order, for tests that want to look at one result.
  Without trace ids (or with `multi_status=False`) one bad input fails the whole batch: 400
  VALIDATION_ERROR "Property values were not valid: [...]" (409 CONFLICT for a taken email) and
  nothing is written. More than 100 inputs -> 400; two inputs with the same id -> 400 naming them in
  `context.ids`; an idProperty that is not unique -> 400 "Unable to perform update/upsert by
  non-unique 0-1 property ...". Per-property checks: PROPERTY_DOESNT_EXIST, READ_ONLY_VALUE,
  INVALID_OPTION, INVALID_EMAIL, a number that is not one, a unique value another contact holds.
- `POST /crm/v3/objects/contacts/batch/read` (by idProperty): 200, or 207 with OBJECT_NOT_FOUND.
- `POST /crm/v3/objects/contacts/gdpr-delete` `{"objectId", "idProperty"?}`: 204 and the contact gone
  (HubSpot's "Permanently delete a contact (GDPR-compliant)", developers.hubspot.com/docs/api-reference/
  legacy/crm/objects/contacts/gdpr/gdpr-delete-contact; the body shape from the changelog "Changes to the
  GDPR deletion endpoints": `{"objectId": "123"}` or `{"idProperty": "email", "objectId": "a@b.c"}`).
  An email with no contact is blocklisted (`blocklist`) and answered 204, as documented; an id with none: 404.
- Properties: `GET/POST /crm/v3/properties/contacts` (201 on create, 409 if it exists),
  `GET/PATCH /crm/v3/properties/contacts/<name>` (404 OBJECT_NOT_FOUND), and the `/groups` routes.
- Auth: `Authorization: Bearer <token>`; unknown -> 401 INVALID_AUTHENTICATION, revoked -> 401
  EXPIRED_AUTHENTICATION, a token without the scope -> 403 MISSING_SCOPES.
- Rate limits per token: a rolling window (`max_per_interval` per `interval_ms`, 100 per 10 s by
  default) and a daily count; 429 with `policyName` TEN_SECONDLY_ROLLING or DAILY, and the
  `X-HubSpot-RateLimit-*` headers on every answer. `retry_after=True` adds a `Retry-After` header
  (HubSpot does not document one, so the default is without).
- Faults to script: `fail_next(status, times=..., path=...)` (e.g. a 502 from the edge).

Wording of messages HubSpot does not document (batch size, duplicate ids, unique-value clashes,
number format) is our best reading of public reports; the shapes and status codes are the API's.

Run standalone (the benchmark does, so the server does not share the client's interpreter):
    python -m fakes.hubspot --port 0 --max-per-interval 100 --interval-ms 10000
It prints its URL on the first line; `GET /__fake/stats` returns its counters as JSON.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import json
import logging
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from fakes.server import Server, serve
from fakes.tls import FakeCA

PORTAL_ID = 4242
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CONTACT_SCOPES = frozenset({"crm.objects.contacts.read", "crm.objects.contacts.write",
                            "crm.schemas.contacts.read", "crm.schemas.contacts.write"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_OBJECT_TYPES = {"contacts": "contacts", "contact": "contacts", "0-1": "contacts"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _option(value: str, label: str, order: int) -> dict[str, Any]:
    return {"label": label, "value": value, "displayOrder": order, "hidden": False, "description": ""}


def _property(name: str, label: str, type_: str, field_type: str, group: str = "contactinformation", *,
              options: list[dict[str, Any]] | None = None, read_only: bool = False, unique: bool = False,
              hubspot_defined: bool = True, calculated: bool = False) -> dict[str, Any]:
    stamp = "2019-08-06T02:41:52.000Z"
    return {
        "name": name, "label": label, "type": type_, "fieldType": field_type, "description": "",
        "groupName": group, "options": options or [], "displayOrder": -1, "calculated": calculated,
        "externalOptions": False, "hasUniqueValue": unique, "hidden": False, "hubspotDefined": hubspot_defined,
        "formField": not read_only, "archived": False, "createdAt": stamp, "updatedAt": stamp,
        "modificationMetadata": {"archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                                 "readOnlyValue": read_only},
    }


LIFECYCLE_STAGES = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                    "customer", "evangelist", "other"]
LEAD_STATUSES = ["NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT",
                 "CONNECTED", "BAD_TIMING"]


def builtin_contact_properties() -> dict[str, dict[str, Any]]:
    """The default contact properties a new HubSpot account has (the ones mappings use)."""
    props = [
        _property("email", "Email", "string", "text"),
        _property("firstname", "First Name", "string", "text"),
        _property("lastname", "Last Name", "string", "text"),
        _property("phone", "Phone Number", "string", "phonenumber"),
        _property("mobilephone", "Mobile Phone Number", "string", "phonenumber"),
        _property("city", "City", "string", "text"),
        _property("state", "State/Region", "string", "text"),
        _property("zip", "Postal Code", "string", "text"),
        _property("country", "Country/Region", "string", "text"),
        _property("company", "Company Name", "string", "text"),
        _property("jobtitle", "Job Title", "string", "text"),
        _property("website", "Website URL", "string", "text"),
        _property("industry", "Industry", "string", "text"),
        _property("message", "Message", "string", "textarea"),
        _property("lifecyclestage", "Lifecycle Stage", "enumeration", "radio",
                  options=[_option(v, v.title(), i) for i, v in enumerate(LIFECYCLE_STAGES)]),
        _property("hs_lead_status", "Lead Status", "enumeration", "radio", "sales_properties",
                  options=[_option(v, v.replace("_", " ").title(), i) for i, v in enumerate(LEAD_STATUSES)]),
        _property("hs_object_id", "Record ID", "number", "number", read_only=True),
        _property("createdate", "Create Date", "datetime", "date", read_only=True),
        _property("lastmodifieddate", "Last Modified Date", "datetime", "date", read_only=True),
        _property("hubspotscore", "HubSpot Score", "number", "number", read_only=True, calculated=True),
    ]
    return {p["name"]: p for p in props}


def builtin_groups() -> dict[str, dict[str, Any]]:
    groups = [("contactinformation", "Contact information"), ("sales_properties", "Sales properties"),
              ("conversioninformation", "Conversion information")]
    return {name: {"name": name, "label": label, "displayOrder": i, "archived": False}
            for i, (name, label) in enumerate(groups)}


class Rejected(Exception):
    """A whole request fails with this status and HubSpot error body."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("message"))
        self.status, self.body = status, body


def error_body(category: str, message: str, *, context: dict[str, list[str]] | None = None,
               errors: list[dict[str, Any]] | None = None, links: dict[str, str] | None = None,
               sub_category: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                            "category": category}
    if sub_category:
        body["subCategory"] = sub_category
    if context is not None:
        body["context"] = context
    if errors is not None:
        body["errors"] = errors
    if links is not None:
        body["links"] = links
    return body


class FakeHubSpot:
    def __init__(self, *, tokens: tuple[str, ...] = (TOKEN,), max_per_interval: int = 100,
                 interval_ms: int = 10_000, daily_limit: int = 250_000, multi_status: bool = True,
                 retry_after: bool = False, delay: float = 0.0, shuffle: bool = True,
                 seed: int | None = None):
        self.lock = threading.RLock()
        self.shuffle = shuffle
        self.random = random.Random(seed)
        self.tokens = set(tokens)
        self.revoked: set[str] = set()
        self.scopes: dict[str, frozenset[str]] = {}
        self.max_per_interval = max_per_interval
        self.interval_ms = interval_ms
        self.daily_limit = daily_limit
        self.multi_status = multi_status
        self.retry_after = retry_after
        self.delay = delay
        self.properties = builtin_contact_properties()
        self.groups = builtin_groups()
        self.contacts: dict[str, dict[str, Any]] = {}
        self._next_id = 1001
        self._windows: dict[str, deque[float]] = {}
        self._daily: dict[str, int] = {}
        self.script: list[tuple[str, int, dict[str, Any], dict[str, str]]] = []
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self.bodies: list[dict[str, Any]] = []  # JSON bodies received (tests look at what was sent)
        self.blocklist: set[str] = set()  # emails GDPR-deleted with no contact: HubSpot refuses them from then on
        self.rate_limited = 0
        self.peak_in_window = 0
        self.arrivals: dict[str, list[float]] = {}  # token -> arrival times of the requests the limit let in
        self.app = self._build()

    # --- what tests set up and look at ------------------------------------------------
    def fail_next(self, status: int, *, times: int = 1, path: str = "/crm/v3/objects",
                  body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        category = "RATE_LIMIT" if status == 429 else ("INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        body = body or error_body(category, f"scripted {status}")
        self.script += [(path, status, body, headers or {})] * times

    def revoke(self, token: str) -> None:
        self.revoked.add(token)

    def limit_scopes(self, token: str, scopes: set[str]) -> None:
        self.scopes[token] = frozenset(scopes)

    def add_contact(self, properties: dict[str, Any]) -> str:
        """A contact that was already in HubSpot (made by sales, an import, a form)."""
        with self.lock:
            contact = self._new_contact()
            contact["properties"].update({k: str(v) for k, v in properties.items()})
            return contact["id"]

    def find(self, name: str, value: str) -> dict[str, Any] | None:
        """The contact whose property `name` is `value` (emails compared case-insensitively)."""
        wanted = value.lower() if name == "email" else value
        for contact in self.contacts.values():
            have = contact["properties"].get(name)
            if have is not None and (have.lower() if name == "email" else have) == wanted:
                return contact
        return None

    def count(self, path_part: str, status: int | None = None) -> int:
        return sum(1 for _, path, code in self.calls if path_part in path and (status is None or code == status))

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": len(self.calls), "upsert_calls": self.count("/batch/upsert"),
                    "read_calls": self.count("/batch/read"), "rate_limited": self.rate_limited,
                    "contacts": len(self.contacts), "peak_in_window": self.peak_in_window}

    # --- the app ------------------------------------------------------------------------
    def _build(self) -> Flask:
        app = Flask("fake_hubspot")
        app.json.sort_keys = False  # type: ignore[attr-defined]

        @app.before_request
        def gate() -> Any:
            if request.path.startswith("/__fake/"):
                return None
            if self.delay:
                time.sleep(self.delay)
            return self._gate()

        @app.after_request
        def headers(response: Response) -> Response:
            if request.path.startswith("/__fake/"):
                return response
            token = _bearer()
            with self.lock:
                used = len(self._window(token, time.monotonic())) if token else 0
                daily = self._daily.get(token or "", 0)
                self.calls.append((request.method, request.path, response.status_code))
            response.headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            response.headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, self.daily_limit - daily))
            response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(self.interval_ms)
            response.headers["X-HubSpot-RateLimit-Max"] = str(self.max_per_interval)
            response.headers["X-HubSpot-RateLimit-Remaining"] = str(max(0, self.max_per_interval - used))
            response.headers["X-HubSpot-Correlation-Id"] = str(uuid.uuid4())
            return response

        @app.errorhandler(Rejected)
        def rejected(exc: Rejected) -> Any:
            return _json(exc.body, exc.status)

        @app.get("/__fake/stats")
        def fake_stats() -> Any:
            return _json(self.stats(), 200)

        @app.get("/account-info/v3/details")
        def account_details() -> Any:
            # The fields of HubSpot's answer (no scope needed beyond a valid token): https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-account-details
            return _json({"portalId": PORTAL_ID, "accountType": "STANDARD", "timeZone": "Africa/Johannesburg",
                          "companyCurrency": "ZAR", "additionalCurrencies": [], "utcOffset": "+02:00",
                          "utcOffsetMilliseconds": 7200000, "uiDomain": "app-eu1.hubspot.com",
                          "dataHostingLocation": "eu1"}, 200)

        @app.get("/__fake/arrivals")
        def fake_arrivals() -> Any:  # when each request inside the limit arrived (epoch seconds), per token
            with self.lock:
                return _json({token: list(times) for token, times in self.arrivals.items()}, 200)

        @app.post("/crm/v3/objects/<object_type>/batch/upsert")
        def batch_upsert(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.objects.contacts.write")
            body = self._body()
            with self.lock:
                status, answer = self._upsert(body.get("inputs"))
            return _json(answer, status)

        @app.post("/crm/v3/objects/<object_type>/gdpr-delete")
        def gdpr_delete(object_type: str) -> Any:
            if self._object(object_type) != "contacts":
                raise Rejected(404, error_body("OBJECT_NOT_FOUND", "GDPR delete is for contacts only"))
            self._need_scope("crm.objects.contacts.write")
            body = self._body()
            object_id = str(body.get("objectId") or "")
            if not object_id:
                raise Rejected(400, error_body("VALIDATION_ERROR", "objectId is required"))
            with self.lock:
                if body.get("idProperty") == "email":
                    contact = self.find("email", object_id)
                    if contact is None:
                        self.blocklist.add(object_id.lower())
                        return Response(status=204)
                else:
                    contact = self.contacts.get(object_id)
                    if contact is None:
                        raise Rejected(404, error_body("OBJECT_NOT_FOUND", "Object not found.  objectId are usually "
                                                                           "numeric."))
                del self.contacts[contact["id"]]
            return Response(status=204)

        @app.post("/crm/v3/objects/<object_type>/batch/read")
        def batch_read(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.objects.contacts.read")
            body = self._body()
            with self.lock:
                status, answer = self._read(body)
            return _json(answer, status)

        @app.get("/crm/v3/properties/<object_type>")
        def properties(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.read")
            with self.lock:
                return _json({"results": [copy.deepcopy(p) for p in self.properties.values()]}, 200)

        @app.post("/crm/v3/properties/<object_type>")
        def create_property(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.write")
            body = self._body()
            with self.lock:
                return _json(self._create_property(body), 201)

        @app.get("/crm/v3/properties/<object_type>/groups")
        def groups(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.read")
            with self.lock:
                return _json({"results": list(self.groups.values())}, 200)

        @app.post("/crm/v3/properties/<object_type>/groups")
        def create_group(object_type: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.write")
            body = self._body()
            name, label = body.get("name"), body.get("label")
            if not name or not label:
                raise Rejected(400, error_body("VALIDATION_ERROR", "name and label are required"))
            with self.lock:
                if name in self.groups:
                    raise Rejected(409, error_body("OBJECT_ALREADY_EXISTS",
                                                   f"A property group named '{name}' already exists."))
                group = {"name": name, "label": label, "displayOrder": body.get("displayOrder", -1),
                         "archived": False}
                self.groups[name] = group
            return _json(group, 201)

        @app.get("/crm/v3/properties/<object_type>/groups/<name>")
        def group(object_type: str, name: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.read")
            if name not in self.groups:
                raise Rejected(404, error_body("OBJECT_NOT_FOUND", f"Unable to find property group {name}"))
            return _json(self.groups[name], 200)

        @app.get("/crm/v3/properties/<object_type>/<name>")
        def one_property(object_type: str, name: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.read")
            with self.lock:
                return _json(copy.deepcopy(self._existing_property(name)), 200)

        @app.patch("/crm/v3/properties/<object_type>/<name>")
        def update_property(object_type: str, name: str) -> Any:
            self._object(object_type)
            self._need_scope("crm.schemas.contacts.write")
            body = self._body()
            with self.lock:
                return _json(self._update_property(name, body), 200)

        return app

    # --- gatekeeping: auth, rate limits, scripted faults ---------------------------------
    def _gate(self) -> Any:
        token = _bearer()
        if token is None or (token not in self.tokens and token not in self.revoked):
            raise Rejected(401, error_body(
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"))
        if token in self.revoked:
            raise Rejected(401, error_body("EXPIRED_AUTHENTICATION",
                                           "The OAuth token used to make this call expired 1 day(s) ago."))
        with self.lock:
            now = time.monotonic()
            window = self._window(token, now)
            if self._daily.get(token, 0) >= self.daily_limit:
                return self._too_many("DAILY", "You have reached your daily limit.", 3600.0)
            if len(window) >= self.max_per_interval:
                wait = window[0] + self.interval_ms / 1000 - now
                return self._too_many("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.",
                                      wait)
            window.append(now)
            self.arrivals.setdefault(token, []).append(time.time())
            self.peak_in_window = max(self.peak_in_window, len(window))
            self._daily[token] = self._daily.get(token, 0) + 1
            for index, (path, status, body, headers) in enumerate(self.script):
                if request.path.startswith(path):
                    del self.script[index]
                    return _json(body, status, headers)
        return None

    def _window(self, token: str | None, now: float) -> deque[float]:
        window = self._windows.setdefault(token or "", deque())
        while window and window[0] <= now - self.interval_ms / 1000:
            window.popleft()
        return window

    def _too_many(self, policy: str, message: str, wait: float) -> Response:
        self.rate_limited += 1
        body = {"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()), "policyName": policy,
                "groupName": f"publicapi:private-app:{PORTAL_ID}"}
        headers = {"Retry-After": str(max(1, round(wait)))} if self.retry_after else {}
        return _json(body, 429, headers)

    def _need_scope(self, scope: str) -> None:
        token = _bearer() or ""
        if scope not in self.scopes.get(token, CONTACT_SCOPES):
            raise Rejected(403, error_body(
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call. Read more about required "
                "scopes here: https://developers.hubspot.com/scopes.",
                errors=[{"message": "One or more of the following scopes are required.",
                         "context": {"requiredGranularScopes": [scope]}}],
                links={"scopes": "https://developers.hubspot.com/scopes"}))

    @staticmethod
    def _object(object_type: str) -> str:
        if object_type not in _OBJECT_TYPES:
            raise Rejected(400, error_body("VALIDATION_ERROR", f"Unable to infer object type from: {object_type}"))
        return _OBJECT_TYPES[object_type]

    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            raise Rejected(400, error_body("VALIDATION_ERROR", "Invalid input JSON on line 1")) from None
        if not isinstance(body, dict):
            raise Rejected(400, error_body("VALIDATION_ERROR", "Invalid input JSON: expected an object"))
        with self.lock:
            self.bodies.append(body)
        return body

    # --- contacts -------------------------------------------------------------------------
    def _new_contact(self) -> dict[str, Any]:
        stamp = now_iso()
        contact_id = str(self._next_id)
        self._next_id += 1
        contact = {"id": contact_id, "createdAt": stamp, "updatedAt": stamp,
                   "properties": {"hs_object_id": contact_id, "createdate": stamp, "lastmodifieddate": stamp}}
        self.contacts[contact_id] = contact
        return contact

    def _id_property(self, name: str) -> dict[str, Any]:
        prop = self.properties.get(name)
        if prop is None or not (name == "email" or prop.get("hasUniqueValue")):
            raise Rejected(400, error_body(
                "VALIDATION_ERROR",
                f"Unable to perform update/upsert by non-unique 0-1 property {name} in portal ID {PORTAL_ID}"))
        return prop

    def _upsert(self, inputs: Any) -> tuple[int, dict[str, Any]]:
        started = now_iso()
        if not isinstance(inputs, list) or not inputs:
            raise Rejected(400, error_body("VALIDATION_ERROR", "inputs must be a non-empty list"))
        if len(inputs) > 100:
            raise Rejected(400, error_body(
                "VALIDATION_ERROR", f"Batch input of size {len(inputs)} exceeds the maximum of 100 inputs",
                context={"maxInputs": ["100"]}))
        keys: dict[tuple[str, str], int] = {}
        duplicates: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") in (None, "") or not item.get("idProperty"):
                raise Rejected(400, error_body("VALIDATION_ERROR",
                                               "Each input needs id, idProperty and properties"))
            self._id_property(item["idProperty"])
            key = (item["idProperty"], _norm(item["idProperty"], str(item["id"])))
            keys[key] = keys.get(key, 0) + 1
            if keys[key] == 2:
                duplicates.append(str(item["id"]))
        if duplicates:
            raise Rejected(400, error_body(
                "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
                context={"ids": duplicates}))
        traced = self.multi_status and all(item.get("objectWriteTraceId") for item in inputs)
        saved_contacts, saved_next = copy.deepcopy(self.contacts), self._next_id
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            try:
                results.append(self._upsert_one(item))
            except Rejected as problem:
                if not traced:
                    self.contacts, self._next_id = saved_contacts, saved_next  # all or nothing
                    raise
                problem.body.update(context={"objectWriteTraceId": [str(item["objectWriteTraceId"])]},
                                    errors=problem.body.get("errors", []), links={})
                problem.body.pop("correlationId", None)
                errors.append(problem.body)
        if self.shuffle:  # HubSpot returns batch results in no particular order (hubspot-api-nodejs#190)
            self.random.shuffle(results)
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "requestedAt": started,
                                  "startedAt": started, "completedAt": now_iso(), "links": {}}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
            return 207, answer
        return 200, answer

    def _upsert_one(self, item: dict[str, Any]) -> dict[str, Any]:
        id_property, id_value = item["idProperty"], str(item["id"])
        properties = {k: _text(v) for k, v in (item.get("properties") or {}).items()}
        target = self.find(id_property, id_value)
        wanted = {**properties, id_property: id_value}
        problems = [p for name, value in wanted.items() if (p := self._invalid(name, value))]
        if problems:
            detail = json.dumps(problems, separators=(",", ":"))
            raise Rejected(400, error_body(
                "VALIDATION_ERROR", f"Property values were not valid: {detail}",
                errors=[{"message": p["message"], "code": p["error"], "in": p["name"]} for p in problems]))
        for name, value in wanted.items():
            if value and (name == "email" or self.properties[name].get("hasUniqueValue")):
                holder = self.find(name, value)
                if holder is not None and holder is not target:
                    if name == "email":
                        raise Rejected(409, error_body(
                            "CONFLICT", f"Contact already exists. Existing ID: {holder['id']}"))
                    raise Rejected(400, error_body(
                        "VALIDATION_ERROR",
                        f"Property \"{name}\" has a unique value constraint; the value is already used by "
                        f"contact {holder['id']}",
                        errors=[{"message": "value is not unique", "code": "UNIQUE_VALUE_TAKEN", "in": name}]))
        created = target is None
        contact = self._new_contact() if created else target
        assert contact is not None
        for name, value in wanted.items():
            if value == "":
                contact["properties"].pop(name, None)
            else:
                contact["properties"][name] = value
        stamp = now_iso()
        contact["updatedAt"] = contact["properties"]["lastmodifieddate"] = stamp
        # Only what `properties` set is echoed (not the idProperty given as `id`), and never the
        # objectWriteTraceId: HubSpot names the trace id only on errors.
        shown = {name: contact["properties"].get(name) for name in
                 [*properties, "hs_object_id", "createdate", "lastmodifieddate"]}
        return {"id": contact["id"], "properties": shown, "createdAt": contact["createdAt"],
                "updatedAt": stamp, "archived": False, "new": created}

    def _invalid(self, name: str, value: str) -> dict[str, Any] | None:
        prop = self.properties.get(name)

        def problem(error: str, message: str) -> dict[str, Any]:
            return {"isValid": False, "message": message, "error": error, "name": name,
                    "localizedErrorMessage": message}

        if prop is None:
            return problem("PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        if prop["modificationMetadata"]["readOnlyValue"]:
            return problem("READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
        if value == "":
            return None
        if prop["type"] == "enumeration":
            allowed = {o["value"] for o in prop["options"]}
            for part in value.split(";"):
                if part not in allowed:
                    return problem("INVALID_OPTION", f'{part} was not one of the allowed options: '
                                                     f'[{", ".join(sorted(allowed))}]')
        if prop["type"] == "number" and not _NUMBER.match(value):
            return problem("INVALID_FLOAT", f"{value} is not a valid number")
        if prop["type"] in ("date", "datetime") and not (value.isdigit() or re.match(r"^\d{4}-\d{2}-\d{2}", value)):
            return problem("INVALID_DATE", f"{value} is not a valid date: use milliseconds since the epoch")
        if name == "email" and not _EMAIL.match(value):
            return problem("INVALID_EMAIL", f"Email address {value} is invalid")
        return None

    def _read(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = now_iso()
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or body.get("properties") is None:
            raise Rejected(400, error_body("VALIDATION_ERROR", "inputs and properties are required"))
        if len(inputs) > 100:
            raise Rejected(400, error_body(
                "VALIDATION_ERROR", f"Batch input of size {len(inputs)} exceeds the maximum of 100 inputs"))
        id_property = body.get("idProperty") or "hs_object_id"
        if id_property != "hs_object_id":
            self._id_property(id_property)
        wanted = [p for p in body["properties"] if p in self.properties]
        results, missing = [], []
        for item in inputs:
            value = str(item.get("id"))
            contact = self.contacts.get(value) if id_property == "hs_object_id" else self.find(id_property, value)
            if contact is None:
                missing.append(value)
                continue
            shown = {name: contact["properties"].get(name) for name in
                     [*wanted, "hs_object_id", "createdate", "lastmodifieddate"]}
            results.append({"id": contact["id"], "properties": shown, "createdAt": contact["createdAt"],
                            "updatedAt": contact["updatedAt"], "archived": False})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "requestedAt": started,
                                  "startedAt": started, "completedAt": now_iso(), "links": {}}
        if missing:
            answer.update(numErrors=1, errors=[{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                           "Check that ids are valid.",
                "context": {"ids": missing}, "errors": [], "links": {}}])
            return 207, answer
        return 200, answer

    # --- properties -------------------------------------------------------------------------
    def _existing_property(self, name: str) -> dict[str, Any]:
        prop = self.properties.get(name)
        if prop is None:
            raise Rejected(404, error_body("OBJECT_NOT_FOUND", f"Property {name} does not exist"))
        return prop

    def _create_property(self, body: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            raise Rejected(400, error_body("VALIDATION_ERROR", f"Missing required fields: {', '.join(missing)}"))
        name = body["name"]
        if name in self.properties:
            raise Rejected(409, error_body("OBJECT_ALREADY_EXISTS", f"A property named '{name}' already exists."))
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise Rejected(400, error_body("VALIDATION_ERROR",
                                           f"Property name {name} must be lower case letters, digits and _"))
        if body["groupName"] not in self.groups:
            raise Rejected(400, error_body("VALIDATION_ERROR", f"Property group {body['groupName']} does not exist"))
        if body["type"] == "enumeration" and not body.get("options"):
            raise Rejected(400, error_body("VALIDATION_ERROR", "Enumeration properties need options"))
        if body.get("hasUniqueValue"):
            if body["type"] not in ("string", "number"):
                raise Rejected(400, error_body("VALIDATION_ERROR",
                                               "Only string and number properties can require unique values"))
            if sum(1 for p in self.properties.values() if p.get("hasUniqueValue")) >= 10:
                raise Rejected(400, error_body("VALIDATION_ERROR",
                                               "An object can have at most 10 unique value properties"))
        prop = _property(name, body["label"], body["type"], body["fieldType"], body["groupName"],
                         options=[_option(o["value"], o["label"], o.get("displayOrder", i))
                                  for i, o in enumerate(body.get("options") or [])],
                         unique=bool(body.get("hasUniqueValue")), hubspot_defined=False)
        prop["description"] = body.get("description") or ""
        prop["createdAt"] = prop["updatedAt"] = now_iso()
        self.properties[name] = prop
        return copy.deepcopy(prop)

    def _update_property(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        prop = self._existing_property(name)
        if prop["modificationMetadata"]["readOnlyDefinition"] and set(body) - {"options"}:
            raise Rejected(400, error_body("VALIDATION_ERROR", f"Property {name} is read only"))
        for key in ("label", "description", "groupName", "hidden", "displayOrder", "formField"):
            if key in body:
                prop[key] = body[key]
        if "options" in body:
            prop["options"] = [_option(o["value"], o["label"], o.get("displayOrder", i))
                               for i, o in enumerate(body["options"])]
        prop["updatedAt"] = now_iso()
        return copy.deepcopy(prop)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else None


def _norm(name: str, value: str) -> str:
    return value.lower() if name == "email" else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@contextmanager
def hubspot_server(fake: FakeHubSpot | None = None, *, tls: bool = False,
                   ca_dir: Path | None = None) -> Iterator[tuple[FakeHubSpot, str, str | None]]:
    """Run a fake on 127.0.0.1: yields (fake, base URL, CA file or None)."""
    fake = fake or FakeHubSpot()
    if not tls:
        with serve(fake.app) as url:
            yield fake, url, None
        return
    ca = FakeCA()
    with tempfile.TemporaryDirectory(dir=ca_dir) as folder:
        ca_file = ca.write_bundle(folder, "hubspot-ca.pem")
        with serve(fake.app, tls=ca) as url:
            yield fake, url, ca_file


class HubSpotProcess:
    """This fake in a child process of its own (so it shares no interpreter, nor GIL, with the clients
    it limits): `python -m fakes.hubspot`. Used by the benchmarks and the multi-process tests."""

    def __init__(self, tokens: list[str], max_per_interval: int = 100, interval_ms: int = 10_000):
        args = [a for token in tokens for a in ("--token", token)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fakes.hubspot", *args, "--max-per-interval", str(max_per_interval),
             "--interval-ms", str(interval_ms), "--quiet"],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the fake HubSpot did not start")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict[str, Any]:
        return self.get("/__fake/stats")

    def arrivals(self, token: str) -> list[float]:
        return self.get("/__fake/arrivals").get(token, [])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def window_usage(arrivals: list[float], limit: int, window: float, step: float = 0.05) -> float:
    """The share of the limit used while there was work: over every `window`-long span that starts at or
    after the first arrival and ends by the last, the requests in it divided by `limit`, averaged.

    A rolling limit of `limit` per `window` allows at most `limit` in each such span, so 1.0 is the most
    anyone can use; spans reaching past the last request (the work ran out) do not count.
    """
    times = sorted(arrivals)
    if not times or times[-1] - times[0] < window:
        return 0.0
    shares, start = [], times[0]
    while start + window <= times[-1] + 1e-9:
        inside = bisect.bisect_left(times, start + window) - bisect.bisect_left(times, start)
        shares.append(inside / limit)
        start += step
    return sum(shares) / len(shares)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-per-interval", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=10_000)
    parser.add_argument("--daily-limit", type=int, default=250_000)
    parser.add_argument("--token", action="append", help="a token it accepts (repeat for several; default: "
                                                          "the fake's own)")
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    fake = FakeHubSpot(tokens=tuple(args.token or [TOKEN]), max_per_interval=args.max_per_interval,
                       interval_ms=args.interval_ms, daily_limit=args.daily_limit)
    server = Server(fake.app, port=args.port)
    print(server.url, flush=True)
    server.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
