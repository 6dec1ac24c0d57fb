"""A local LeadOS REST API, as its reference describes it, for tests: real HTTP on 127.0.0.1.

- Bearer API key on every call: a wrong or missing key answers 401 `unauthorized`.
- `GET /v1/leads`: delivered leads (full lead objects, as in the webhook), filterable by
  `campaign_id`, `date_from` and `date_to` (days of delivered_at; `honour_filters=False` makes a
  server that ignores them), `limit` (over 200: 400 `invalid_request`).
  The reference only says "paginated", so the fake paginates whichever way a test asks:
  `paging="cursor"` (`{"data", "next_cursor", "has_more"}`, opaque cursors, a bad one is 400),
  `"page"` (`{"leads", "page", "per_page", "total"}`, no page count: the client must stop on an
  empty page), `"link"` (`{"data", "meta": {"page", "next": "/v1/leads?page=N" | null}}`), or
  `"ignore"` (a broken server that answers the first page whatever is asked).
- `GET /v1/leads/stats`, `GET /v1/usage/balance`, `POST /v1/webhooks` (then `deliver()` posts a
  signed `lead.delivered` to the registered URL with the registered secret, as LeadOS would).
- `X-RateLimit-Limit/Remaining/Reset` on every answer; when a window is spent, 429 with
  `Retry-After`. `fail_next(n, status)` scripts failures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Flask, Response, request

from fakes.rate_window import ENVIRON_KEY, FixedWindow, carry_rate_headers
from fakes.server import ServedFake

NAMES = ("Raj Sharma", "Naledi Dlamini", "Pieter van der Merwe", "Aisha Patel", "Sipho", "Botha, Anri")
INDUSTRIES = ("SaaS", "Logistics", "Mining", "Retail", "Fintech")


def make_lead(n: int, campaign: str = "camp_abc123") -> dict[str, Any]:
    """Lead number `n` as LeadOS lists it: the same object a `lead.delivered` webhook carries."""
    delivery = f"del_{n:05d}"
    name = NAMES[n % len(NAMES)]
    company = f"Company {n} (Pty) Ltd"
    return {
        "id": delivery,
        "delivery_id": delivery,
        "campaign_id": campaign,
        "full_name": name,
        "job_title": ("Founder", "CFO", "Head of Sales", "Operations Manager")[n % 4],
        "company_name": company,
        "company_domain": f"company{n}.co.za",
        "company_size": ("1-10", "11-50", "51-200", "201-500")[n % 4],
        "company_industry": INDUSTRIES[n % len(INDUSTRIES)],
        "geography": ("Cape Town, South Africa", "Kathmandu, Nepal", "Durban, South Africa")[n % 3],
        "email": f"person{n}@company{n}.co.za",
        "email_status": ("valid", "catch_all")[n % 2],
        "phone": None if n % 3 else f"+2782{n:07d}",
        "linkedin_url": f"https://linkedin.com/in/person{n}",
        "score": 50 + n % 50,
        "intent_summary": f"Evaluating vendors (lead {n})",
        "enrichment_level": "email",
        "credits_consumed": 1 + n % 3,
        "delivered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_777_000_000 + 600 * n)),
    }


def utc_day(stamp: str) -> str:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"off:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    return int(text[4:]) if text.startswith("off:") and text[4:].isdigit() else None


class FakeLeadOS(ServedFake):
    def __init__(self, leads: int = 0, *, paging: str = "cursor", api_key: str = "ldo_test_sk",
                 rate_limit: int = 1000, window: float = 60.0, honour_filters: bool = True):
        self.honour_filters = honour_filters  # False: a server that ignores filter parameters
        self.leads = [make_lead(n) for n in range(leads)]
        self.paging = paging
        self.api_key = api_key
        self.rate_limit, self.window = rate_limit, window
        self.requests: Counter[str] = Counter()
        self.queries: list[dict[str, str]] = []  # every GET /v1/leads query, for assertions
        self.webhooks: list[dict[str, Any]] = []
        self.suppressed: set[str] = set()  # POST /v1/suppression
        self.too_many = 0
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._window = FixedWindow()
        self._lock = threading.Lock()
        self.app = self._build()

    # --- scripting ------------------------------------------------------------------------
    def fail_next(self, count: int, status: int, headers: dict[str, str] | None = None) -> None:
        self._failures.extend([(status, headers or {})] * count)

    def deliver(self, lead: dict[str, Any], *, webhook: int = -1) -> requests.Response:
        """POST a signed `lead.delivered` to a registered webhook, as LeadOS does."""
        hook = self.webhooks[webhook]
        body = json.dumps({"event": "lead.delivered", "delivery_id": lead["delivery_id"],
                           "campaign_id": lead.get("campaign_id"), "lead": lead}).encode()
        signature = "sha256=" + hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
        return requests.post(hook["url"], data=body, timeout=10,
                             headers={"Content-Type": "application/json", "X-LeadOS-Signature": signature})

    # --- the app --------------------------------------------------------------------------
    def _build(self) -> Flask:
        app = Flask("fake_leados")

        def answer(status: int, body: Any, headers: dict[str, str]) -> Response:
            return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")

        @app.before_request
        def gate() -> Response | None:
            self.requests[f"{request.method} {request.path}"] += 1
            headers, allowed = self._window.take(self.rate_limit, self.window)
            request.environ[ENVIRON_KEY] = headers
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return answer(401, {"code": "unauthorized", "message": "Invalid API key"}, headers)
            if self._failures:
                status, extra = self._failures.pop(0)
                return answer(status, {"code": "scripted", "message": f"scripted {status}"}, {**headers, **extra})
            if not allowed:
                self.too_many += 1
                wait = max(1, math.ceil(float(headers["X-RateLimit-Reset"]) - time.time()))
                return answer(429, {"code": "rate_limited", "message": "Too many requests"},
                              {**headers, "Retry-After": str(wait)})
            return None

        carry_rate_headers(app)

        @app.get("/v1/leads")
        def list_leads() -> Any:
            args = request.args.to_dict()
            self.queries.append(args)
            limit = int(args.get("limit", 25))
            if limit > 200:
                return answer(400, {"code": "invalid_request", "message": "limit must be at most 200"}, {})
            rows = self.leads if not self.honour_filters else [
                lead for lead in self.leads
                if (not args.get("campaign_id") or lead["campaign_id"] == args["campaign_id"])
                and (not args.get("date_from") or utc_day(lead["delivered_at"]) >= args["date_from"])
                and (not args.get("date_to") or utc_day(lead["delivered_at"]) <= args["date_to"])]
            if self.paging == "cursor":
                offset = 0
                if args.get("cursor"):
                    found = _offset(args["cursor"])
                    if found is None:
                        return answer(400, {"code": "invalid_cursor", "message": "cursor is not valid"}, {})
                    offset = found
                chunk = rows[offset:offset + limit]
                more = offset + limit < len(rows)
                return answer(200, {"data": chunk, "next_cursor": _cursor(offset + limit) if more else None,
                                    "has_more": more}, {})
            page = int(args.get("page", 1)) if self.paging != "ignore" else 1
            chunk = rows[(page - 1) * limit: page * limit]
            if self.paging == "link":
                more = page * limit < len(rows)
                return answer(200, {"data": chunk, "meta": {"page": page,
                                                            "next": f"/v1/leads?page={page + 1}" if more else None}},
                              {})
            return answer(200, {"leads": chunk, "page": page, "per_page": limit, "total": len(rows)}, {})

        @app.get("/v1/leads/stats")
        def stats() -> Any:
            days: Counter[str] = Counter()
            credits: Counter[str] = Counter()
            for lead in self.leads:
                days[lead["delivered_at"][:10]] += 1
                credits[lead["delivered_at"][:10]] += lead["credits_consumed"]
            return answer(200, {"days": [{"date": d, "delivered": n, "credits": credits[d]}
                                         for d, n in sorted(days.items())]}, {})

        @app.get("/v1/usage/balance")
        def balance() -> Any:
            return answer(200, {"credits_remaining": 480, "credits_used_this_month": 120}, {})

        # "POST /v1/suppression: Add emails to suppression list" (the API reference, /work/shared/seeds/
        # leados-api.txt; it shows no body): we take `{"emails": [...]}` and answer how many were added.
        @app.post("/v1/suppression")
        def suppress() -> Any:
            body = request.get_json(silent=True) or {}
            emails = body.get("emails")
            if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e for e in emails):
                return answer(400, {"code": "invalid_request", "message": "emails must be a list of emails"}, {})
            added = {e.strip().lower() for e in emails} - self.suppressed
            self.suppressed |= added
            return answer(200, {"added": len(added), "total": len(self.suppressed)}, {})

        @app.post("/v1/webhooks")
        def register() -> Any:
            body = request.get_json(silent=True) or {}
            if not str(body.get("url", "")).startswith(("https://", "http://127.0.0.1")):
                return answer(400, {"code": "invalid_request", "message": "url must be https"}, {})
            if not isinstance(body.get("events"), list) or not body["events"]:
                return answer(400, {"code": "invalid_request", "message": "events must be a non-empty list"}, {})
            hook = {"id": f"wh_{len(self.webhooks) + 1}", "url": body["url"], "events": body["events"],
                    "secret": body.get("secret") or "", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
            self.webhooks.append(hook)
            return answer(201, {k: v for k, v in hook.items() if k != "secret"}, {})

        return app
