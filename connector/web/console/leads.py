"""Console pages about leads: the newest ones, a search by lead id, email or phone, and one lead's story.

The search is a POST, so an email or phone typed in never lands in a URL (a router's log, the
browser's history). The store finds people by keyed hashes (store/people.py), so any phone format
matches. The list shows lead ids and times only; personal data appears on a lead's page, masked
unless "show personal" is chosen, as `connector explain --show-personal`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import abort, render_template, request

from connector.explain import DECISIONS, Story, build
from connector.store.people import normal_email, normal_phone
from connector.web.console import bp, runtime

LISTED = 50
NAME_KEY = re.compile(r"(^|_)(first|last|full|sur)?_?name$", re.IGNORECASE)


def search(query: str) -> list[Any]:
    """Leads with this id, or this email, or this phone (whichever the text can be)."""
    query = query.strip()
    if not query:
        return []
    email = query if normal_email(query) else None
    phone = query if not email and normal_phone(query) and not any(c.isalpha() for c in query) else None
    return runtime().store.find_leads(lead_id=query, email=email, phone=phone, limit=LISTED)


def _mask_names(story: Story, events: list[dict[str, Any]]) -> None:
    """The redactor knows phones and emails by their shape; a name has none, so the values of the lead's
    own name fields are masked wherever a mapped field carries them."""
    names: set[str] = set()
    for event in events:
        lead = json.loads(event["lead_json"])
        stack = [lead]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if isinstance(value, str) and NAME_KEY.search(str(key)) and value.strip():
                        names.add(value.strip())
                    elif isinstance(value, dict | list):
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
    for fieldset in story.fields:
        for field in fieldset.fields:
            if isinstance(field.value, str) and field.value.strip() in names:
                field.value = "[name]"


@bp.route("/leads", methods=["GET", "POST"])
def leads() -> Any:
    if request.method == "POST":
        query = request.form.get("q", "")
        return render_template("console/leads.html", leads=search(query), query=query, searched=True)
    return render_template("console/leads.html", leads=runtime().store.recent_leads(LISTED), query="", searched=False)


@bp.get("/leads/<source>/<path:lead_id>")
def lead(source: str, lead_id: str) -> Any:
    rt = runtime()
    history = rt.store.lead_history(lead_id, source)
    if not history.events:
        abort(404)
    personal = request.args.get("personal") == "1"
    story = build(rt, lead_id, history, show_personal=personal)
    if not personal:
        _mask_names(story, history.events)
    return render_template("console/lead.html", story=story, source=source, lead_id=lead_id, personal=personal,
                           decisions=DECISIONS)
