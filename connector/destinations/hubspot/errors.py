"""Reading HubSpot's error answers: whole-request errors, 429 policies and per-record batch errors.

HubSpot's error body is `{status, message, correlationId, category, subCategory?, errors?[{message,
code, in, context}], context?{k: [v]}, links?}`; a 429 adds `policyName` (TEN_SECONDLY_ROLLING or
DAILY). A batch validation failure lists its property problems inside the message:
`Property values were not valid: [{"isValid":false,"message":"…","error":"INVALID_EMAIL","name":"email"}]`.
This module turns all of that into one `HubSpotError` with the most specific code we can name, so
`connector.errors.classify("hubspot", ...)` (the one table) decides what it means.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.errors import ConnectorError, classify, parse_retry_after

REMOTE = "hubspot"

# A per-record error in a 207 carries a category but no HTTP status; these are the statuses
# HubSpot uses for the same categories on a whole request.
CATEGORY_STATUS = {
    "VALIDATION_ERROR": 400, "INVALID_AUTHENTICATION": 401, "EXPIRED_AUTHENTICATION": 401,
    "MISSING_SCOPES": 403, "OBJECT_NOT_FOUND": 404, "CONFLICT": 409, "OBJECT_ALREADY_EXISTS": 409,
    "RATE_LIMIT": 429, "INTERNAL_ERROR": 500,
}
_PROBLEMS_PREFIX = "Property values were not valid: "
# Codes we derive from HubSpot's message text where it gives no code of its own.
_MESSAGE_CODES = (
    ("Unable to perform update/upsert by non-unique", "NON_UNIQUE_ID_PROPERTY"),
    ("Duplicate IDs found in batch input", "DUPLICATE_ID_IN_BATCH"),
    ("Contact already exists", "CONTACT_EXISTS"),
)
_TOKEN_HINT = " (set HUBSPOT_ACCESS_TOKEN to the private app's current access token)"
_HINTS = {
    "INVALID_AUTHENTICATION": _TOKEN_HINT,
    "EXPIRED_AUTHENTICATION": _TOKEN_HINT,
    "MISSING_SCOPES": " (give the private app the scopes crm.objects.contacts.read/write and "
                      "crm.schemas.contacts.read/write)",
    "CONTACT_EXISTS": " (another contact already has this email: with id_property leaditio_lead_id every lead "
                      "makes its own contact; use id_property: email to update the existing person instead)",
    "NON_UNIQUE_ID_PROPERTY": " (id_property must be email or a property created with unique values: run "
                              "`connector crm setup`)",
}
# Problems of the mapping or the account, not of one lead: reported before any lead problem.
CONFIG_CODES = ("PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE", "NON_UNIQUE_ID_PROPERTY")


@dataclass
class HubSpotError:
    status: int | None
    message: str
    category: str | None = None
    code: str | None = None  # the most specific: a property error code, a derived code, the policy
    field: str | None = None  # the property HubSpot blames
    context: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    problems: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # "Property values were not valid" items
    policy: str | None = None  # 429: TEN_SECONDLY_ROLLING, DAILY, ...
    retry_after: float | None = None
    interval: float | None = None  # X-HubSpot-RateLimit-Interval-Milliseconds, in seconds

    def classified(self, **override: Any) -> ConnectorError:
        """The error class the worker acts on (connector.errors.RULES, remote "hubspot")."""
        kw: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.readable(),
                              "field": self.field, "retry_after": self.retry_after}
        kw.update(override)
        return classify(REMOTE, **kw)

    def readable(self) -> str:
        """HubSpot's own words (property problems spelled out), with emails and phone numbers masked.

        The text is logged and shown in `connector status`; the lead itself stays in the store.
        """
        if not self.problems:
            return mask(f"HubSpot: {self.message}{_HINTS.get(self.code or '', '')}")
        parts = [f"{p.get('name')}: {p.get('message') or p.get('error')}" for p in self.problems]
        return mask(f"HubSpot: property values were not valid: {'; '.join(parts)}")

    def ids(self) -> list[str]:
        """The inputs this error names (objectWriteTraceId or id values) in its context."""
        return [value for key in ("objectWriteTraceId", "ids", "id") for value in self.context.get(key, [])]


def from_answer(status: int | None, body: Any, headers: Mapping[str, str] | None = None) -> HubSpotError:
    """A whole-request error: the status, the (str or parsed) body and the response headers."""
    data = _json(body)
    headers = headers or {}
    message = str(data.get("message") or (body if isinstance(body, str) and body else f"HTTP {status}"))
    error = HubSpotError(status=status, message=message[:2000], category=data.get("category"),
                         context=_context(data.get("context")), policy=data.get("policyName"))
    details = data.get("errors") if isinstance(data.get("errors"), list) else []
    _fill(error, details)
    if status == 429:
        error.code = error.policy or "RATE_LIMIT"
        error.retry_after = parse_retry_after(headers.get("Retry-After"))
        interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
        if interval and interval.isdigit():
            error.interval = int(interval) / 1000
    return error


def from_batch_error(item: Any) -> HubSpotError:
    """One entry of a 207's `errors` (an SDK `StandardError` or a dict)."""
    data = item.to_dict() if hasattr(item, "to_dict") else dict(item)
    category = data.get("category")
    error = HubSpotError(status=CATEGORY_STATUS.get(str(category), 400), message=str(data.get("message") or ""),
                         category=category, context=_context(data.get("context")))
    details = data.get("errors") or []
    _fill(error, [d if isinstance(d, dict) else {} for d in details])
    return error


def _fill(error: HubSpotError, details: list[Any]) -> None:
    """Pick the code and field: embedded property problems first, then `errors[]`, the message, the category."""
    if error.message.startswith(_PROBLEMS_PREFIX):
        try:
            parsed = json.loads(error.message[len(_PROBLEMS_PREFIX):])
        except ValueError:
            parsed = []
        error.problems = [p for p in parsed if isinstance(p, dict)] if isinstance(parsed, list) else []
    if error.problems:
        ranked = sorted(error.problems, key=lambda p: p.get("error") not in CONFIG_CODES)
        error.code, error.field = ranked[0].get("error"), ranked[0].get("name")
        return
    for detail in details:
        if isinstance(detail, dict) and detail.get("code"):
            error.code, error.field = str(detail["code"]), detail.get("in")
            for key, values in _context(detail.get("context")).items():
                error.context.setdefault(key, values)
            return
    for prefix, code in _MESSAGE_CODES:
        if error.message.startswith(prefix):
            error.code = code
            return
    error.code = error.category


_EMAIL = re.compile(r"([^\s@\"'\[\](){}:;,]?)[^\s@\"'\[\](){}:;,]*@")
_PHONE = re.compile(r"(?<![\w+])(?:\+|0)\d[\d ()-]{5,}(\d{3})\b")  # +27..., 082...: not record ids


def mask(text: str) -> str:
    """`thabo.m@gmail.com` -> `t***@gmail.com`, `+27823456789` -> `***789`: never log contact details."""
    return _PHONE.sub(r"***\1", _EMAIL.sub(r"\1***@", text))


def _json(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _context(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in value.items()}
