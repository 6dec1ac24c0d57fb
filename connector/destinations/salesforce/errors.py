"""Reading Salesforce's answers: the JSON of a response, the text of an error, why a duplicate rule fired,
and a refused request or record classified (connector.errors) in Salesforce's own words."""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce.exceptions import SalesforceError

from connector.destinations.salesforce.settings import REMOTE, Settings
from connector.errors import ConnectorError, classify


def explain_duplicates(error: dict[str, Any], message: str, mode: str) -> str:
    """Name the records a duplicate rule matched, so the admin can merge or relax the rule."""
    result = error.get("duplicateResult") or {}
    ids = [m.get("record", {}).get("Id") for r in result.get("matchResults") or []
           for m in r.get("matchRecords") or []]
    ids = [i for i in ids if i]
    rule = result.get("duplicateRule")
    parts = [message]
    if rule:
        parts.append(f"duplicate rule {rule}")
    if ids:
        parts.append(f"matches {', '.join(ids)}")
    if mode == "dead_letter":
        parts.append("set on_duplicate: allow_save to save such leads anyway (rules with action Allow)")
    else:
        parts.append("the rule blocks saving; change its action to Allow to let these leads in")
    return "; ".join(parts)


def json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def text(content: Any) -> str:
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")[:500]
    return str(content)[:500] if content else ""


def request_error(exc: SalesforceError, settings: Settings) -> ConnectorError:
    """A refused HTTP request (all of a batch): classified by Salesforce's errorCode and status."""
    first = exc.content[0] if isinstance(exc.content, list) and exc.content and isinstance(
        exc.content[0], dict) else {}
    code = first.get("errorCode")
    message = first.get("message") or text(exc.content) or f"HTTP {exc.status}"
    fields = first.get("fields") or []
    if exc.status == 404 and code in (None, "NOT_FOUND") and \
            f"/{settings.external_id_field}" in str(getattr(exc, "url", "")):  # an upsert by external id
        message += (f" (is there an object {settings.object} with an External ID field "
                    f"{settings.external_id_field}, visible to this user?)")
    return classify(REMOTE, status=exc.status, code=code, message=message,
                    field=", ".join(fields) or None)


def record_error(errors: list[dict[str, Any]], status: int, on_duplicate: str) -> ConnectorError:
    """One record's refusal: Salesforce's message(s) and the field(s) it blames, classified."""
    if not errors:
        return classify(REMOTE, status=status, code="UNKNOWN_EXCEPTION", message="Salesforce gave no reason")
    first = errors[0]
    code = first.get("statusCode") or first.get("errorCode")
    messages = [e.get("message", "") for e in errors if e.get("message")]
    message = "; ".join(dict.fromkeys(messages)) or str(code)
    if code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" and "UNABLE_TO_LOCK_ROW" in message:
        code = "UNABLE_TO_LOCK_ROW"  # a trigger or flow hit a locked row: as transient as the lock itself
    if code == "DUPLICATES_DETECTED":
        message = explain_duplicates(first, message, on_duplicate)
    fields = [f for e in errors for f in e.get("fields") or []]
    return classify(REMOTE, status=status, code=code, message=message,
                    field=", ".join(dict.fromkeys(fields)) or None)
