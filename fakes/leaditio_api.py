"""A local Leaditio REST API that behaves as its documentation says, for tests and the benchmark.

Real HTTP (werkzeug) on 127.0.0.1 with an ephemeral port, in a thread:

- `GET /leads` (filters vertical, score_tier, suburb, date_from, date_to; page; limit default 25,
  over 100 -> 400 invalid_request), newest first, without phone/email; `GET /leads/<id>` full detail
  or 404 not_found; `POST /leads/webhook`; `GET /account/stats`.
- Bearer keys: unknown or missing -> 401 unauthorized, a key whose plan has no API -> 403 forbidden.
- A fixed rate-limit window per key (size and length configurable, aligned to the epoch like a
  real per-minute window), `X-RateLimit-Limit/Remaining/Reset` on every answer, 429 rate_limited
  with `Retry-After` (seconds or an HTTP date) when the window is spent.
- Faults to script: `fail_next(n, status)`, `fail_after(n)` (every request after the n-th answers
  500: a dead API), `on_list` hook (e.g. delete a lead between list and detail, add leads mid-run),
  `ignore_page` (every page is page 1).
- Counters: requests per kind, 429s, detail calls.

Run standalone (for the benchmark, so the server does not share the client's interpreter):
    python -m fakes.leaditio_api --leads 10000 --limit 600 --window 60
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

from flask import Flask, Response, request

from fakes.rate_window import ENVIRON_KEY, carry_rate_headers
from fakes.server import Server

VERTICALS = ("solar", "insurance", "financial", "property")
TIERS = ("hot", "warm", "qualified")
SUBURBS = ("Sandton", "Rosebank", "Durbanville", "Umhlanga", "Centurion", "Stellenbosch")
LIST_FIELDS = ("id", "vertical", "sub_vertical", "first_name", "suburb", "province", "score_tier",
               "service_type", "delivered_at")
SUB_VERTICALS = {"solar": "installation", "insurance": "car", "financial": "home_loan", "property": "buy"}
PROVINCES = {"Sandton": "Gauteng", "Rosebank": "Gauteng", "Centurion": "Gauteng", "Durbanville": "Western Cape",
             "Stellenbosch": "Western Cape", "Umhlanga": "KwaZulu-Natal"}


def make_lead(n: int, *, start: datetime | None = None) -> dict[str, Any]:
    """Lead number `n` (deterministic): the full detail document the API returns."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    vertical = VERTICALS[n % len(VERTICALS)]
    suburb = SUBURBS[n % len(SUBURBS)]
    score = 40 + (n * 7) % 60
    delivered = start + timedelta(minutes=17 * n)
    stamp = delivered.strftime("%Y-%m-%dT%H:%M:%SZ")
    created = (delivered - timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": f"lead_{n:06d}",
        "vertical": vertical,
        "sub_vertical": SUB_VERTICALS[vertical],
        "first_name": ("Thabo", "Lerato", "Pieter", "Aisha", "Sipho")[n % 5],
        "suburb": suburb,
        "province": PROVINCES[suburb],
        "service_type": f"{vertical.title()} service",
        "budget_range": "R100,000–R150,000",
        "urgency": ("asap", "this_month", "browsing")[n % 3],
        "phone": f"+2782{n:07d}",
        "email": f"lead{n}@example.com",
        "score": score,
        "score_tier": "hot" if score >= 80 else "warm" if score >= 60 else "qualified",
        "score_breakdown": {"phone_valid": 10, "email_valid": 8, "intent_score": score % 10},
        "delivered_at": stamp,
        "created_at": created,
    }


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"code": code, "message": message}), status=status,
                    mimetype="application/json", headers=headers or {})


class FakeLeaditioApi:
    """The fake's state and server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, leads: list[dict[str, Any]] | None = None, *, keys: dict[str, bool] | None = None,
                 rate_limit: int = 60, window: float = 60.0, retry_after_as_date: bool = False):
        self.leads: dict[str, dict[str, Any]] = {}
        for lead in leads or []:
            self.leads[lead["id"]] = lead
        self.keys = keys if keys is not None else {"test-key": True}  # key -> plan includes API access
        self.rate_limit = rate_limit
        self.window = window
        self.retry_after_as_date = retry_after_as_date
        self.lock = threading.Lock()
        self.windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests counted)
        self.requests: dict[str, int] = {"list": 0, "detail": 0, "webhook": 0, "stats": 0}
        self.rate_limited = 0
        self.request_times: list[float] = []
        self.webhooks: list[dict[str, Any]] = []
        self.served = 0
        self._fail_next: list[int] = []
        self._fail_after: int | None = None
        self.ignore_page = False  # a misbehaving API: every page is the first one
        self.on_list: Callable[[FakeLeaditioApi, list[dict[str, Any]]], None] | None = None
        self.app = self._build_app()
        self._server: Server | None = None

    # --- scripting ------------------------------------------------------------------------
    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next `count` requests (after auth and rate limiting) answer `status`."""
        with self.lock:
            self._fail_next.extend([status] * count)

    def fail_after(self, served: int | None) -> None:
        """Every request after `served` successful ones answers 500 (None: heal)."""
        with self.lock:
            self._fail_after = served

    def add(self, *leads: dict[str, Any]) -> None:
        with self.lock:
            for lead in leads:
                self.leads[lead["id"]] = lead

    def delete(self, lead_id: str) -> None:
        with self.lock:
            self.leads.pop(lead_id, None)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/api/v1"

    # --- server lifecycle -----------------------------------------------------------------
    def start(self) -> FakeLeaditioApi:
        self._server = Server(self.app, quiet=True).start()  # thousands of requests: no access log
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeLeaditioApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- protocol ---------------------------------------------------------------------------
    def _rate_headers(self, key: str, *, count: bool) -> tuple[dict[str, str], bool]:
        """Charge one request to `key`'s window; headers, and whether the window was already spent."""
        now = time.time()
        start = math.floor(now / self.window) * self.window
        with self.lock:
            begun, used = self.windows.get(key, (start, 0))
            if begun != start:
                begun, used = start, 0
            exceeded = used >= self.rate_limit
            if count and not exceeded:
                used += 1
            self.windows[key] = (begun, used)
        reset = begun + self.window
        headers = {"X-RateLimit-Limit": str(self.rate_limit),
                   "X-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
                   "X-RateLimit-Reset": str(int(math.ceil(reset)))}
        if exceeded:
            wait = max(0.0, reset - now)
            headers["Retry-After"] = (formatdate(reset, usegmt=True) if self.retry_after_as_date
                                      else str(max(1, math.ceil(wait)) if self.window >= 1 else round(wait, 3)))
        return headers, exceeded

    def _build_app(self) -> Flask:
        app = Flask("fake_leaditio_api")
        fake = self

        @app.before_request
        def _gate() -> Response | None:
            auth = request.headers.get("Authorization", "")
            key = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            if key is None or key not in fake.keys:
                return _error(401, "unauthorized", "Invalid or missing API key")
            headers, exceeded = fake._rate_headers(key, count=True)
            request.environ[ENVIRON_KEY] = headers
            if exceeded:
                with fake.lock:
                    fake.rate_limited += 1
                return _error(429, "rate_limited", "Too many requests — wait for rate limit reset", headers)
            with fake.lock:
                fake.request_times.append(time.time())
            if not fake.keys[key]:
                return _error(403, "forbidden", "Your plan does not include API access", headers)
            with fake.lock:
                status = fake._fail_next.pop(0) if fake._fail_next else None
                if status is None and fake._fail_after is not None and fake.served >= fake._fail_after:
                    status = 500
            if status is not None:
                code = {500: "internal_error", 503: "internal_error", 400: "invalid_request",
                        404: "not_found"}.get(status, "internal_error")
                return _error(status, code, "Unexpected server error — retry with backoff"
                              if status >= 500 else "scripted failure", headers)
            return None

        carry_rate_headers(app)

        @app.after_request
        def _count(response: Response) -> Response:
            if response.status_code < 400:
                with fake.lock:
                    fake.served += 1
            return response

        @app.get("/api/v1/leads")
        def list_leads() -> Response:
            args = request.args
            try:
                page = int(args.get("page", 1))
                limit = int(args.get("limit", 25))
            except ValueError:
                return _error(400, "invalid_request", "page and limit must be integers")
            if page < 1 or limit < 1 or limit > 100:
                return _error(400, "invalid_request", "limit must be between 1 and 100; page must be >= 1")
            for name, allowed in (("vertical", VERTICALS), ("score_tier", TIERS)):
                if args.get(name) and args[name] not in allowed:
                    return _error(400, "invalid_request", f"{name} must be one of {', '.join(allowed)}")
            for name in ("date_from", "date_to"):
                if args.get(name):
                    try:
                        datetime.strptime(args[name], "%Y-%m-%d")
                    except ValueError:
                        return _error(400, "invalid_request", f"{name} must be an ISO 8601 date (2026-05-01)")
            with fake.lock:
                matching = [lead for lead in fake.leads.values() if _matches(lead, args)]
                fake.requests["list"] += 1
            matching.sort(key=lambda lead: (lead["delivered_at"], lead["id"]), reverse=True)
            first = 0 if fake.ignore_page else (page - 1) * limit
            chunk = matching[first: first + limit]
            summaries = [{k: lead[k] for k in LIST_FIELDS if k in lead} for lead in chunk]
            if fake.on_list is not None:
                fake.on_list(fake, summaries)
            return Response(json.dumps({"leads": summaries, "total": len(matching), "page": page, "limit": limit}),
                            mimetype="application/json")

        @app.get("/api/v1/leads/<lead_id>")
        def get_lead(lead_id: str) -> Response:
            with fake.lock:
                fake.requests["detail"] += 1
                lead = fake.leads.get(lead_id)
            if lead is None:
                return _error(404, "not_found", "Resource does not exist or does not belong to you")
            return Response(json.dumps(lead), mimetype="application/json")

        @app.post("/api/v1/leads/webhook")
        def register_webhook() -> Response:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return _error(400, "invalid_request", "body must be a JSON object")
            url, secret, events = body.get("url"), body.get("secret"), body.get("events")
            if not isinstance(url, str) or not url.startswith("https://"):
                return _error(400, "invalid_request", "url must be an HTTPS URL")
            if not isinstance(secret, str) or not secret:
                return _error(400, "invalid_request", "secret is required")
            if (not isinstance(events, list) or not events
                    or any(e not in ("lead.new", "lead.updated") for e in events)):
                return _error(400, "invalid_request", 'events must be a list of "lead.new", "lead.updated"')
            with fake.lock:
                fake.requests["webhook"] += 1
                hook = {"webhook_id": f"wh_{len(fake.webhooks) + 1:08x}", "url": url, "events": events,
                        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
                fake.webhooks.append({**hook, "secret": secret})
            return Response(json.dumps(hook), status=201, mimetype="application/json")

        @app.get("/api/v1/account/stats")
        def stats() -> Response:
            with fake.lock:
                fake.requests["stats"] += 1
                received = len(fake.leads)
            return Response(json.dumps({
                "leads_received": received, "leads_converted": received // 5,
                "conversion_rate": f"{(100 * (received // 5) / received) if received else 0:.1f}%",
                "leads_this_month": min(received, 38), "quota_this_month": 150, "active_plan": "pro",
                "plan_renews_at": "2026-06-01T00:00:00Z"}), mimetype="application/json")

        return app


def _matches(lead: dict[str, Any], args: Any) -> bool:
    if args.get("vertical") and lead.get("vertical") != args["vertical"]:
        return False
    if args.get("score_tier") and lead.get("score_tier") != args["score_tier"]:
        return False
    if args.get("suburb") and str(lead.get("suburb", "")).lower() != args["suburb"].lower():
        return False
    day = str(lead.get("delivered_at", ""))[:10]
    if args.get("date_from") and day < args["date_from"]:
        return False
    return not (args.get("date_to") and day > args["date_to"])


def _serve_forever(argv: list[str]) -> None:
    """Standalone mode for the benchmark: prints the base URL, then a JSON line of counters per `stats`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--key", default="bench-key")
    args = parser.parse_args(argv)
    fake = FakeLeaditioApi([make_lead(n) for n in range(args.leads)], keys={args.key: True},
                           rate_limit=args.limit, window=args.window).start()
    print(fake.url, flush=True)
    for line in sys.stdin:  # any line: report counters; EOF: stop
        if line.strip() == "stats":
            with fake.lock:
                times = list(fake.request_times)
                print(json.dumps({"requests": dict(fake.requests), "rate_limited": fake.rate_limited,
                                  "first": times[0] if times else None, "last": times[-1] if times else None,
                                  "served": len(times)}), flush=True)
    fake.stop()


if __name__ == "__main__":
    _serve_forever(sys.argv[1:])


def source_config(url: str, *, api: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    """A `sources:` block with a Leaditio source pointing at a fake (fast retries, small clock margin)."""
    return {"leaditio": {"marketplace": "leaditio",
                         "secrets": ["${LEADITIO_WEBHOOK_SECRET}", "${LEADITIO_WEBHOOK_SECRET_PREVIOUS:-}"],
                         "api": {"base_url": url, "api_key": "${LEADITIO_API_KEY}", "backoff": 0.001,
                                 "reset_margin": 0.01, "retries": 2, **(api or {})},
                         **source}}
