"""A local Salesforce that answers the way the real one does, for the real simple-salesforce to talk to.

HTTPS only (simple-salesforce forces https), so it is served with a trustme certificate. It speaks:
SOAP `login()` and the OAuth token endpoint (username-password, client credentials with Basic auth,
JWT bearer checked against a public key); `sobjects/<Object>/describe`; single upsert by external id
(201 created, 200 updated, 300 several matches, 400 error lists with `errorCode`); sObject Collections
upsert and update (always 200, per-record `errors[].statusCode`); SOQL `query` for the simple
`SELECT ... FROM X WHERE F IN (...)` shapes the connector sends. Every REST answer carries
`Sforce-Limit-Info`; an expired session is 401 INVALID_SESSION_ID, a used-up daily allowance
403 REQUEST_LIMIT_EXCEEDED. Tests script the rest: lock contention, converted leads, duplicate rules,
5xx answers, slow answers.

`ToFake` is the test-only requests adapter that sends the library's hard-wired
`https://<domain>.salesforce.com` login calls to this server instead (see the Salesforce notes).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from xml.dom import minidom

import jwt
import requests
from flask import Flask, Response, request

from fakes.server import serve
from fakes.tls import FakeCA

API = r"/services/data/v<version>"
ORG_ID = "00D5g000000FAKEEAA"


def _field(name: str, type_: str = "string", *, length: int = 0, nillable: bool = True, createable: bool = True,
           updateable: bool = True, defaulted: bool = False, picklist: list[str] | None = None,
           restricted: bool = False, external_id: bool = False, unique: bool = False, custom: bool = False,
           id_lookup: bool = False, label: str | None = None) -> dict[str, Any]:
    """One describe field with the keys the real describe has (a subset of its ~60 keys)."""
    return {
        "name": name, "label": label or name.replace("__c", "").replace("_", " "), "type": type_,
        "length": length, "byteLength": length * 3, "nillable": nillable, "createable": createable,
        "updateable": updateable, "defaultedOnCreate": defaulted, "externalId": external_id, "unique": unique,
        "idLookup": id_lookup or external_id, "custom": custom, "calculated": False, "autoNumber": False,
        "restrictedPicklist": restricted, "dependentPicklist": False, "precision": 18 if type_ in
        ("double", "currency") else 0, "scale": 2 if type_ == "currency" else 0,
        "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": False, "validFor": None}
                           for v in picklist or []],
        "soapType": {"string": "xsd:string", "double": "xsd:double", "currency": "xsd:double",
                     "boolean": "xsd:boolean", "id": "tns:ID", "reference": "tns:ID"}.get(type_, "xsd:string"),
    }


def standard_lead_fields() -> list[dict[str, Any]]:
    """The Lead fields of a fresh Enterprise org that matter here (the real list has ~60)."""
    return [
        _field("Id", "id", length=18, nillable=False, createable=False, updateable=False, defaulted=True,
               id_lookup=True),
        _field("IsDeleted", "boolean", nillable=False, createable=False, updateable=False, defaulted=True),
        _field("LastName", "string", length=80, nillable=False),
        _field("FirstName", "string", length=40),
        _field("Salutation", "picklist", length=255, picklist=["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
        _field("Title", "string", length=128),
        _field("Company", "string", length=255, nillable=False),
        _field("Street", "textarea", length=255),
        _field("City", "string", length=40),
        _field("State", "string", length=80),
        _field("PostalCode", "string", length=20),
        _field("Country", "string", length=80),
        _field("Phone", "phone", length=40),
        _field("MobilePhone", "phone", length=40),
        _field("Email", "email", length=80, id_lookup=True),
        _field("Website", "url", length=255),
        _field("Description", "textarea", length=32000),
        _field("LeadSource", "picklist", length=255,
               picklist=["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]),
        _field("Status", "picklist", length=255, nillable=False, defaulted=True, restricted=True,
               picklist=["Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                         "Closed - Not Converted"]),
        _field("Industry", "picklist", length=255, picklist=["Energy", "Finance", "Insurance", "Real Estate"]),
        _field("Rating", "picklist", length=255, restricted=True, picklist=["Hot", "Warm", "Cold"]),
        _field("OwnerId", "reference", length=18, nillable=False, defaulted=True),
        _field("IsConverted", "boolean", nillable=False, createable=False, updateable=False, defaulted=True),
        _field("ConvertedContactId", "reference", length=18, createable=False, updateable=False),
        _field("CreatedDate", "datetime", nillable=False, createable=False, updateable=False, defaulted=True),
    ]


def leaditio_custom_fields() -> list[dict[str, Any]]:
    """The custom fields docs/readme/salesforce.md tells admins to create."""
    return [
        _field("Leaditio_Lead_ID__c", "string", length=64, external_id=True, unique=True, custom=True),
        _field("Lead_Score__c", "double", custom=True),
        _field("Lead_Score_Tier__c", "string", length=20, custom=True),
        _field("Budget_Min__c", "currency", custom=True),
        _field("Budget_Max__c", "currency", custom=True),
        _field("Lead_Vertical__c", "string", length=40, custom=True),
        _field("Service_Type__c", "string", length=255, custom=True),
        _field("Urgency__c", "string", length=40, custom=True),
    ]


def admin_objects() -> dict[str, list[dict[str, Any]]]:
    """The setup objects `crm setup` writes to grant field access (a small part of each)."""
    ident = _field("Id", "id", length=18, nillable=False, createable=False, updateable=False, defaulted=True)
    return {
        "PermissionSet": [ident, _field("Name", length=80, nillable=False), _field("Label", length=80, nillable=False),
                          _field("Description", "textarea", length=255)],
        "FieldPermissions": [ident, _field("ParentId", "reference", length=18, nillable=False),
                             _field("SobjectType", length=40, nillable=False), _field("Field", length=100,
                                                                                      nillable=False),
                             _field("PermissionsRead", "boolean", nillable=False, defaulted=True),
                             _field("PermissionsEdit", "boolean", nillable=False, defaulted=True)],
        "PermissionSetAssignment": [ident, _field("PermissionSetId", "reference", length=18, nillable=False),
                                    _field("AssigneeId", "reference", length=18, nillable=False)],
    }


TOOLING_TYPES = {"Text": "string", "Number": "double", "Currency": "currency", "DateTime": "datetime",
                 "Date": "date", "Checkbox": "boolean", "LongTextArea": "textarea"}
USER_ID = "0055g00000FAKEUSER"


def contact_fields() -> list[dict[str, Any]]:
    return [
        _field("Id", "id", length=18, nillable=False, createable=False, updateable=False, defaulted=True),
        _field("LastName", "string", length=80, nillable=False),
        _field("FirstName", "string", length=40),
        _field("Email", "email", length=80),
        _field("Phone", "phone", length=40),
        _field("MobilePhone", "phone", length=40),
        _field("LeadSource", "picklist", length=255, picklist=["Web", "Purchased List", "Other"]),
        _field("Lead_Score__c", "double", custom=True),
    ]


class SalesforceError(Exception):
    """An answer the fake gives instead of a result: HTTP status and the real error list body."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            item["fields"] = self.fields
        return [item]


class RecordError(Exception):
    """One record's failure inside an otherwise successful request (`statusCode` in Collections)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, extra: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields, self.extra = code, message, fields or [], extra or {}

    def as_collection_error(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields, **self.extra}

    def as_rest_error(self) -> dict[str, Any]:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields, **self.extra}


class FakeSalesforce:
    """One org: users, a connected app, objects with records, and knobs for every failure."""

    def __init__(self, ca: FakeCA) -> None:
        self.ca = ca
        self.url = ""  # https://127.0.0.1:<port>, set by `running()`
        self.lock = threading.RLock()
        # credentials the org accepts
        self.username = "admin@acme.example"
        self.password = "hunter2"
        self.security_token = "TOKEN123"
        self.consumer_key = "3MVG9fake.consumer.key"
        self.consumer_secret = "fake-consumer-secret"
        self.jwt_public_key: str | None = None
        self.my_domain = "acme.my"
        self.reset()
        self.app = self._build()

    # --- state and knobs ---------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, list[dict[str, Any]]] = {
                "Lead": standard_lead_fields() + leaditio_custom_fields(), "Contact": contact_fields(),
                **admin_objects()}
            self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.objects}
            self.deleted: set[str] = set()
            self.sessions: set[str] = set()
            self.api_calls = 0  # REST calls, which is what the org's daily allowance counts
            self.api_limit = 15000
            self.requests: list[dict[str, Any]] = []  # every request, logins included
            self.script: list[tuple[int, Any]] = []  # answers to give to the next REST calls instead
            self.locked: dict[str, int] = {}  # external id -> how many more times it is locked
            self.trigger_locked: set[str] = set()  # external ids whose Apex trigger hits a locked row
            self.duplicate_rule: str | None = None  # None, "alert" or "block": matching Email
            self.delay = 0.0
            # Lead assignment rules: rule id -> the owner it gives. The REST API applies the active
            # rule on creates AND updates unless `Sforce-Auto-Assign: FALSE`; a rule id in the header
            # applies that rule to created records (REST API Developer Guide, "Assignment Rule Header").
            self.tooling_api = True  # False: the Tooling API answers 404, as for a user or edition without it
            self.assignment_rules: dict[str, str] = {}
            self.active_rule: str | None = None
            self.logins = 0
            self.refuse_sessions = False  # every session is refused, even a fresh one (frozen user)
            self.login_down = False  # the login endpoints answer 503, as during an incident

    def new_session(self) -> str:
        """A valid session id, as if someone had logged in (for direct session mode)."""
        token = f"{ORG_ID}!AQ{uuid.uuid4().hex}"
        with self.lock:
            self.sessions.add(token)
        return token

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def fail_next(self, status: int, code: str, message: str = "", times: int = 1) -> None:
        body = [{"message": message or f"scripted {code}", "errorCode": code}]
        with self.lock:
            self.script += [(status, body)] * times

    def add_record(self, obj: str = "Lead", **values: Any) -> str:
        """Put a record in the org directly (as a user or another integration would)."""
        with self.lock:
            record_id = self._new_id(obj)
            self.records[obj][record_id] = {"Id": record_id, **values}
            return record_id

    def convert(self, external_id: str, field: str = "Leaditio_Lead_ID__c") -> str:
        """Convert the Lead with this external id; returns the new Contact's id."""
        with self.lock:
            lead = next(r for r in self.records["Lead"].values() if r.get(field) == external_id)
            contact_id = self.add_record("Contact", LastName=lead.get("LastName"), FirstName=lead.get("FirstName"),
                                         Email=lead.get("Email"))
            lead.update(IsConverted=True, ConvertedContactId=contact_id, Status="Closed - Converted")
            return contact_id

    def leads(self, field: str = "Leaditio_Lead_ID__c") -> dict[str, dict[str, Any]]:
        with self.lock:
            return {r[field]: dict(r) for r in self.records["Lead"].values() if r.get(field)}

    def rest_calls(self, path_part: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith("/services/data/") and path_part in r["path"]]

    # --- helpers -----------------------------------------------------------------------
    def _new_id(self, obj: str) -> str:
        prefix = {"Lead": "00Q", "Contact": "003", "PermissionSet": "0PS", "FieldPermissions": "01k",
                  "PermissionSetAssignment": "0Pa", "CustomField": "00N"}.get(obj, "a00")
        return f"{prefix}5g{uuid.uuid4().hex[:13].upper()}"

    def _fields(self, obj: str) -> dict[str, dict[str, Any]]:
        """The fields this user can see: a field created through the Tooling API stays hidden until a
        permission set assigned to the user grants it (field-level security)."""
        if obj not in self.objects:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        granted = self._granted_fields()
        return {f["name"].lower(): f for f in self.objects[obj]
                if not f.get("_hidden") or f"{obj}.{f['name']}".lower() in granted}

    def _granted_fields(self) -> set[str]:
        with self.lock:
            assigned = {a["PermissionSetId"] for a in self.records["PermissionSetAssignment"].values()
                        if a.get("AssigneeId") == USER_ID}
            return {p["Field"].lower() for p in self.records["FieldPermissions"].values()
                    if p.get("ParentId") in assigned and p.get("PermissionsEdit")}

    def _matches(self, obj: str, field: str, value: Any) -> list[dict[str, Any]]:
        return [r for r in self.records[obj].values() if str(r.get(field)) == str(value)]

    def _check_columns(self, obj: str, record: dict[str, Any]) -> None:
        """Unknown fields fail the whole request, as Salesforce's JSON deserialiser does."""
        fields = self._fields(obj)
        for name in record:
            if name != "attributes" and name.lower() not in fields:
                raise SalesforceError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")

    def _validate(self, obj: str, values: dict[str, Any], creating: bool, existing: dict[str, Any] | None) -> None:
        fields = self._fields(obj)
        if existing and existing.get("IsConverted"):
            raise RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        for name, value in values.items():
            spec = fields[name.lower()]
            if (creating and not spec["createable"]) or (not creating and not spec["updateable"]):
                raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE",
                                  f"Unable to create/update fields: {spec['name']}. Please check the security "
                                  "settings of this field and verify that it is read/write for your profile or "
                                  "permission set.", [spec["name"]])
            if value is None:
                continue
            if spec["type"] in ("double", "currency") and not isinstance(value, int | float):
                raise SalesforceError(400, "JSON_PARSER_ERROR",
                                      f"Cannot deserialize instance of double from VALUE_STRING value {value} "
                                      f"or request may be missing a required field at [line:1, column:2]")
            if spec["type"] == "picklist" and spec["restrictedPicklist"] and \
                    value not in [p["value"] for p in spec["picklistValues"]]:
                raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{spec['label']}: bad value for restricted picklist field: {value}", [spec["name"]])
            if spec["length"] and isinstance(value, str) and len(value) > spec["length"]:
                raise RecordError("STRING_TOO_LONG", f"{spec['label']}: data value too large: {value[:40]} "
                                  f"(max length={spec['length']})", [spec["name"]])
        if creating:
            missing = [f["name"] for f in fields.values() if f["createable"] and not f["nillable"]
                       and not f["defaultedOnCreate"] and values.get(f["name"]) in (None, "")]
            if missing:
                raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                                  missing)

    def _duplicate_check(self, obj: str, values: dict[str, Any], allow_save: bool) -> None:
        email = values.get("Email")
        if not self.duplicate_rule or obj != "Lead" or not email:
            return
        twins = [r for r in self.records[obj].values() if r.get("Email") == email]
        if not twins or (self.duplicate_rule == "alert" and allow_save):
            return
        raise RecordError("DUPLICATES_DETECTED", "Use one of these records?", [], {"duplicateResult": {
            "allowSave": self.duplicate_rule == "alert", "duplicateRule": "Standard_Lead_Duplicate_Rule",
            "duplicateRuleEntityType": "Lead",
            "errorMessage": "You're creating a duplicate record. We recommend you use an existing record instead.",
            "matchResults": [{"entityType": "Lead", "errors": [], "matchEngine": "FuzzyMatchEngine",
                              "rule": "Standard_Lead_Match_Rule_v1_0", "size": len(twins), "success": True,
                              "matchRecords": [{"additionalInformation": [], "fieldDiffs": [], "matchConfidence": 100.0,
                                                "record": {"attributes": {"type": "Lead", "url":
                                                           f"/services/data/v59.0/sobjects/Lead/{t['Id']}"},
                                                           "Id": t["Id"]}} for t in twins]}]}})

    def _assigned_owner(self, obj: str, creating: bool) -> str | None:
        """The owner an assignment rule gives this write, after the request's Sforce-Auto-Assign header."""
        if obj != "Lead":
            return None
        header = (request.headers.get("Sforce-Auto-Assign") or "TRUE").strip()
        if header.upper() == "FALSE":
            return None
        if header.upper() == "TRUE":
            return self.assignment_rules.get(self.active_rule or "")
        return self.assignment_rules.get(header) if creating else None

    def _upsert_one(self, obj: str, field: str, value: str, values: dict[str, Any],
                    allow_save: bool) -> tuple[str, bool]:
        """Create or update one record by external id; RecordError for a per-record failure."""
        fields = self._fields(obj)
        spec = fields.get(field.lower())
        if spec is None or not (spec["externalId"] or spec["idLookup"]):
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        if self.locked.get(value):
            self.locked[value] -= 1
            raise RecordError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records")
        if value in self.trigger_locked:
            raise RecordError("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "LeadTrigger: execution of AfterInsert caused "
                              "by: System.DmlException: Update failed. First exception on row 0; first error: "
                              "UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record: []")
        values = {fields[k.lower()]["name"]: v for k, v in values.items() if k.lower() != field.lower()}
        matches = self._matches(obj, spec["name"], value)
        if len(matches) > 1:
            raise RecordError("DUPLICATE_EXTERNAL_ID", f"{spec['name']}: more than one record found for external "
                              f"id field: [{', '.join(m['Id'] for m in matches)}]", [spec["name"]],
                              {"_matches": [m["Id"] for m in matches]})
        existing = matches[0] if matches else None
        self._validate(obj, values, existing is None, existing)
        if existing is None:
            self._duplicate_check(obj, values, allow_save)
            record_id = self._new_id(obj)
            self.records[obj][record_id] = {"Id": record_id, spec["name"]: value, "IsConverted": False,
                                            "Status": "Open - Not Contacted", "OwnerId": USER_ID, **values}
            owner = self._assigned_owner(obj, creating=True)
            if owner:
                self.records[obj][record_id]["OwnerId"] = owner
            return record_id, True
        existing.update(values)
        owner = self._assigned_owner(obj, creating=False)
        if owner:
            existing["OwnerId"] = owner
        return existing["Id"], False

    # --- the app -----------------------------------------------------------------------
    def _build(self) -> Flask:  # noqa: C901 - one route per endpoint, kept together
        app = Flask("fake_salesforce")

        @app.before_request
        def _record_and_gate() -> Response | None:
            with self.lock:
                self.requests.append({"method": request.method, "path": request.path,
                                      "raw_uri": request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI"),
                                      "host": request.headers.get("X-Forwarded-Host"),
                                      "headers": dict(request.headers), "body": request.get_data()})
            if self.delay:
                time.sleep(self.delay)
            if not request.path.startswith("/services/data/"):
                if self.login_down:
                    return Response("<!DOCTYPE html><html><head><title>Service Unavailable</head><body>Down for "
                                    "maintenance<br></body></html>", 503, content_type="text/html")
                return None
            auth = request.headers.get("Authorization", "")
            with self.lock:
                if not auth.startswith("Bearer ") or auth[7:] not in self.sessions or self.refuse_sessions:
                    return self._json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                                      401)
                if self.api_calls >= self.api_limit:
                    return self._json([{"message": "TotalRequests Limit exceeded.",
                                        "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)
                self.api_calls += 1
                if self.script:
                    status, body = self.script.pop(0)
                    return self._json(body, status)
            return None

        @app.after_request
        def _limit_info(response: Response) -> Response:
            if request.path.startswith("/services/data/"):
                response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_calls}/{self.api_limit}"
            return response

        @app.errorhandler(SalesforceError)
        def _sf_error(exc: SalesforceError) -> Response:
            return self._json(exc.body(), exc.status)

        @app.post("/services/Soap/u/<version>")
        def soap_login(version: str) -> Response:
            doc = minidom.parseString(request.get_data())

            def text(tag: str) -> str:
                nodes = doc.getElementsByTagName(tag) or doc.getElementsByTagName(tag.replace("n1:", "urn:"))
                return nodes[0].firstChild.data if nodes and nodes[0].firstChild else ""

            username, password = text("n1:username"), text("n1:password")
            if request.headers.get("SOAPAction") != "login" or username != self.username or \
                    password != self.password + self.security_token:
                return Response(_SOAP_FAULT, 500, content_type="text/xml")
            token = self._login()
            body = _SOAP_OK.format(url=self.url, version=version, session=token, org=ORG_ID)
            return Response(body, 200, content_type="text/xml")

        @app.post("/services/oauth2/token")
        def oauth_token() -> Response:
            form = request.form
            grant = form.get("grant_type")
            host = request.headers.get("X-Forwarded-Host") or ""
            if grant == "password":
                ok = form.get("client_id") == self.consumer_key and form.get("client_secret") == \
                    self.consumer_secret and form.get("username") == self.username and \
                    form.get("password") == self.password + self.security_token
                if not ok:
                    return self._oauth_error("invalid_grant", "authentication failure")
            elif grant == "client_credentials":
                if host and not host.endswith(".my.salesforce.com"):
                    return self._oauth_error("unsupported_grant_type", "grant type not supported")
                expected = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode()).decode()
                if request.headers.get("Authorization") != f"Basic {expected}":
                    return self._oauth_error("invalid_client", "invalid client credentials")
            elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                try:
                    claims = jwt.decode(form.get("assertion", ""), self.jwt_public_key or "", algorithms=["RS256"],
                                        audience=["https://login.salesforce.com", "https://test.salesforce.com"])
                except jwt.PyJWTError:
                    return self._oauth_error("invalid_grant", "invalid assertion")
                if claims.get("iss") != self.consumer_key:
                    return self._oauth_error("invalid_client_id", "client identifier invalid")
                if claims.get("sub") != self.username:
                    return self._oauth_error("invalid_grant", "user hasn't approved this consumer")
            else:
                return self._oauth_error("unsupported_grant_type", "grant type not supported")
            token = self._login()
            return self._json({"access_token": token, "instance_url": self.url, "token_type": "Bearer",
                               "id": f"https://login.salesforce.com/id/{ORG_ID}/0055g00000FAKEUSER",
                               "issued_at": str(int(time.time() * 1000)), "signature": "fake="}, 200)

        @app.get(f"{API}/sobjects/<obj>/describe")
        def describe(version: str, obj: str) -> Response:
            fields = self._fields(obj)
            return self._json({"name": obj, "label": obj, "createable": True, "updateable": True,
                               "custom": obj.endswith("__c"), "fields": list(fields.values())}, 200)

        @app.patch(f"{API}/sobjects/<obj>/<field>/<path:value>")
        def upsert_one(version: str, obj: str, field: str, value: str) -> Response:
            body = request.get_json()
            self._check_columns(obj, body)
            if any(k.lower() == field.lower() for k in body):
                raise SalesforceError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                                      f"Unable to create/update fields: {field}. The external id field must not "
                                      "be in the body.", [field])
            with self.lock:
                try:
                    record_id, created = self._upsert_one(obj, field, value, body, self._allow_save())
                except RecordError as exc:
                    if exc.code == "DUPLICATE_EXTERNAL_ID":
                        return self._json([f"/services/data/v{version}/sobjects/{obj}/{i}"
                                           for i in exc.extra["_matches"]], 300)
                    return self._json([exc.as_rest_error()], 400)
            return self._json({"id": record_id, "success": True, "errors": [], "created": created},
                              201 if created else 200)

        # One record by id (`connector forget --crm`): REST API Developer Guide, "Delete a Record" and "Update
        # a Record": 204 No Content on success; a missing id 404 NOT_FOUND, one deleted before 404 ENTITY_IS_DELETED.
        @app.delete(f"{API}/sobjects/<obj>/<record_id>")
        def delete_one(version: str, obj: str, record_id: str) -> Response:
            with self.lock:
                if self.records.get(obj, {}).pop(record_id, None) is None:
                    code = "ENTITY_IS_DELETED" if record_id in self.deleted else "NOT_FOUND"
                    raise SalesforceError(404, code, "entity is deleted" if code == "ENTITY_IS_DELETED"
                                          else "The requested resource does not exist")
                self.deleted.add(record_id)
            return Response(status=204)

        @app.patch(f"{API}/sobjects/<obj>/<record_id>")
        def update_one(version: str, obj: str, record_id: str) -> Response:
            body = request.get_json()
            self._check_columns(obj, body)
            with self.lock:
                existing = self.records.get(obj, {}).get(record_id)
                if existing is None:
                    raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
                try:
                    self._validate(obj, body, False, existing)
                except RecordError as exc:
                    return self._json([exc.as_rest_error()], 400)
                existing.update(body)
            return Response(status=204)

        @app.patch(f"{API}/composite/sobjects/<obj>/<field>")
        def upsert_many(version: str, obj: str, field: str) -> Response:
            body = request.get_json()
            records = body.get("records") or []
            if len(records) > 200:
                raise SalesforceError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than "
                                                                "200 records into this call")
            for record in records:
                if (record.get("attributes") or {}).get("type") != obj:
                    raise SalesforceError(400, "INVALID_TYPE", "The sObject type in the record does not match")
                self._check_columns(obj, record)
            results = []
            with self.lock:
                for record in records:
                    values = {k: v for k, v in record.items() if k != "attributes"}
                    key = next((v for k, v in values.items() if k.lower() == field.lower()), None)
                    if key in (None, ""):
                        results.append({"success": False, "errors": [RecordError(
                            "MISSING_ARGUMENT", f"{field} not specified", [field]).as_collection_error()]})
                        continue
                    try:
                        record_id, created = self._upsert_one(obj, field, str(key), values, self._allow_save())
                    except RecordError as exc:
                        exc.extra.pop("_matches", None)
                        results.append({"success": False, "errors": [exc.as_collection_error()]})
                        continue
                    results.append({"id": record_id, "success": True, "errors": [], "created": created})
            return self._json(results, 200)

        @app.patch(f"{API}/composite/sobjects")
        def update_many(version: str) -> Response:
            body = request.get_json()
            results = []
            with self.lock:
                for record in body.get("records") or []:
                    obj = record["attributes"]["type"]
                    self._check_columns(obj, record)
                    values = {k: v for k, v in record.items() if k not in ("attributes", "Id")}
                    existing = self.records.get(obj, {}).get(record.get("Id"))
                    if existing is None:
                        results.append({"success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED",
                                                                      "message": "entity is deleted", "fields": []}]})
                        continue
                    try:
                        self._validate(obj, values, False, existing)
                    except RecordError as exc:
                        results.append({"success": False, "errors": [exc.as_collection_error()]})
                        continue
                    existing.update(values)
                    results.append({"id": existing["Id"], "success": True, "errors": []})
            return self._json(results, 200)

        @app.post(f"{API}/sobjects/<obj>")
        def create_one(version: str, obj: str) -> Response:
            body = request.get_json()
            self._check_columns(obj, body)
            with self.lock:
                try:
                    record_id = self._create(obj, body)
                except RecordError as exc:
                    return self._json([exc.as_rest_error()], 400)
            return self._json({"id": record_id, "success": True, "errors": []}, 201)

        @app.post(f"{API}/composite/sobjects")
        def create_many(version: str) -> Response:
            results = []
            records = request.get_json().get("records") or []
            for record in records:
                self._check_columns(record["attributes"]["type"], record)
            with self.lock:
                for record in records:
                    values = {k: v for k, v in record.items() if k != "attributes"}
                    try:
                        results.append({"id": self._create(record["attributes"]["type"], values), "success": True,
                                        "errors": []})
                    except RecordError as exc:
                        results.append({"success": False, "errors": [exc.as_collection_error()]})
            return self._json(results, 200)

        @app.post(f"{API}/tooling/sobjects/CustomField/")
        def create_custom_field(version: str) -> Response:
            if not self.tooling_api:
                raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
            body = request.get_json()
            full_name, meta = body.get("FullName", ""), body.get("Metadata") or {}
            obj, _, name = full_name.partition(".")
            if obj not in self.objects:
                raise SalesforceError(400, "INVALID_FIELD", f"Cannot find entity {obj}")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*__c", name) or "__" in name[:-3]:
                raise SalesforceError(400, "FIELD_INTEGRITY_EXCEPTION", f"Invalid API name: {name}")
            kind = TOOLING_TYPES.get(meta.get("type"))
            if kind is None or not meta.get("label"):
                raise SalesforceError(400, "FIELD_INTEGRITY_EXCEPTION", f"Field type or label missing: {meta}")
            if meta["type"] == "Text" and not 0 < int(meta.get("length") or 0) <= 255:
                raise SalesforceError(400, "FIELD_INTEGRITY_EXCEPTION", "Length must be between 1 and 255")
            with self.lock:
                if any(f["name"].lower() == name.lower() for f in self.objects[obj]):
                    raise SalesforceError(400, "DUPLICATE_DEVELOPER_NAME",
                                          "There is already a field named " + name + " on " + obj)
                field = _field(name, kind, length=int(meta.get("length") or 0), custom=True, label=meta["label"],
                               external_id=bool(meta.get("externalId")), unique=bool(meta.get("unique")),
                               defaulted=kind == "boolean", nillable=kind != "boolean")
                field["_hidden"] = True  # no field-level security yet
                self.objects[obj].append(field)
                field_id = self._new_id("CustomField")
            return self._json({"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []}, 201)

        @app.get("/services/oauth2/userinfo")
        def userinfo() -> Response:
            auth = request.headers.get("Authorization", "")
            if auth[7:] not in self.sessions:
                return self._json({"error": "invalid_token", "error_description": "Bad_OAuth_Token"}, 403)
            return self._json({"user_id": USER_ID, "organization_id": ORG_ID,
                               "preferred_username": self.username}, 200)

        @app.get(f"{API}/query")
        @app.get(f"{API}/query/")
        def query(version: str) -> Response:
            obj, columns, rows = self._query(request.args.get("q", ""))
            records = [{"attributes": {"type": obj, "url": f"/services/data/v{version}/sobjects/{obj}/{r['Id']}"},
                        **{c: r.get(c) for c in columns}} for r in rows]
            return self._json({"totalSize": len(records), "done": True, "records": records}, 200)

        return app

    _SELECT = re.compile(r"^\s*SELECT\s+(?P<cols>.+?)\s+FROM\s+(?P<obj>\w+)\s+WHERE\s+(?P<where>.+?)\s*$",
                         re.IGNORECASE | re.DOTALL)
    _CONDITION = re.compile(r"(\w+)\s*(=|IN)\s*(\([^)]*\)|'(?:[^'\\]|\\.)*'|true|false)", re.IGNORECASE)

    def _query(self, soql: str) -> tuple[str, list[str], list[dict[str, Any]]]:
        """The SOQL subset the connector uses: columns FROM X WHERE a IN (...) [AND b = true]."""
        match = self._SELECT.match(soql)
        if not match:
            raise SalesforceError(400, "MALFORMED_QUERY", f"unexpected token: {soql[:40]}")
        obj = match.group("obj")
        fields = self._fields(obj)
        columns = [c.strip() for c in match.group("cols").split(",")]
        for column in columns:
            if column.lower() not in fields:
                raise SalesforceError(400, "INVALID_FIELD", f"No such column '{column}' on entity '{obj}'.")
        columns = [fields[c.lower()]["name"] for c in columns]
        conditions = []
        for name, op, raw in self._CONDITION.findall(match.group("where")):
            if name.lower() not in fields:
                raise SalesforceError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj}'.")
            if raw.lower() in ("true", "false"):
                wanted = {raw.lower() == "true"}
            else:
                wanted = {v.replace("\\'", "'") for v in re.findall(r"'((?:[^'\\]|\\.)*)'", raw)}
            conditions.append((fields[name.lower()]["name"], op, wanted))
        with self.lock:
            rows = [r for r in self.records[obj].values()
                    if all((r.get(f) if isinstance(r.get(f), bool) else str(r.get(f))) in wanted
                           for f, _op, wanted in conditions)]
        return obj, columns, rows

    def _create(self, obj: str, values: dict[str, Any]) -> str:
        fields = self._fields(obj)
        values = {fields[k.lower()]["name"]: v for k, v in values.items()}
        self._validate(obj, values, True, None)
        record_id = self._new_id(obj)
        self.records[obj][record_id] = {"Id": record_id, **values}
        return record_id

    def _allow_save(self) -> bool:
        return request.headers.get("Sforce-Duplicate-Rule-Header", "").replace(" ", "").lower() == "allowsave=true"

    def _login(self) -> str:
        with self.lock:
            self.logins += 1
        return self.new_session()

    @staticmethod
    def _json(body: Any, status: int) -> Response:
        return Response(json.dumps(body), status, content_type="application/json;charset=UTF-8")

    @staticmethod
    def _oauth_error(error: str, description: str) -> Response:
        return FakeSalesforce._json({"error": error, "error_description": description}, 400)


_SOAP_OK = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>
<metadataServerUrl>{url}/services/Soap/m/{version}/{org}</metadataServerUrl><passwordExpired>false</passwordExpired>
<sandbox>false</sandbox><serverUrl>{url}/services/Soap/u/{version}/{org}</serverUrl>
<sessionId>{session}</sessionId><userId>0055g00000FAKEUSER</userId>
<userInfo><organizationId>{org}</organizationId></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"""

_SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>
<faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, password, security token; or user
 locked out.</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>
<sf:exceptionMessage>Invalid username, password, security token; or user locked out.</sf:exceptionMessage>
</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"""


class ToFake(requests.adapters.HTTPAdapter):
    """Test-only: send `https://*.salesforce.com/...` (the library's login URLs) to the fake.

    The original host goes along as X-Forwarded-Host, so tests can assert which login domain
    (login, test, <mydomain>.my) the connector chose.
    """

    def __init__(self, fake_url: str, **kw: Any):
        super().__init__(**kw)
        self.netloc = urllib.parse.urlsplit(fake_url).netloc

    def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:  # type: ignore[override]
        parts = urllib.parse.urlsplit(request.url or "")
        if parts.hostname and parts.hostname.endswith(".salesforce.com"):
            request.headers["X-Forwarded-Host"] = parts.hostname
            request.url = parts._replace(netloc=self.netloc).geturl()
        return super().send(request, **kw)


def trust(monkeypatch: Any, fake: FakeSalesforce, folder: Any) -> str:
    """Make requests trust the fake's CA the way that survives CI images: through the environment."""
    return fake.ca.trust(monkeypatch, folder, "fake-salesforce-ca.pem")


@contextmanager
def running(ca: FakeCA | None = None) -> Iterator[FakeSalesforce]:
    """A fake org on an ephemeral HTTPS port, trusted by `ca`."""
    ca = ca or FakeCA()
    fake = FakeSalesforce(ca)
    with serve(fake.app, tls=ca) as url:
        fake.url = url
        yield fake
