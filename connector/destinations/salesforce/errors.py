"""Reading Salesforce's answers: the JSON of a response, the text of an error, why a duplicate rule fired."""

from __future__ import annotations

from typing import Any

import requests


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
