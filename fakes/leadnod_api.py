"""A local LeadNod API, as its documentation describes it, for tests: real HTTP on 127.0.0.1.

- `POST /oauth/token` (JSON body, grant_type client_credentials): `{access_token, token_type,
  expires_in, scope}`; wrong credentials 401 `{"error": "invalid_client", ...}` (RFC 6749),
  another grant type 400 `unsupported_grant_type`. Tokens expire after `expires_in` seconds
  (configurable), and `expire_tokens()` ends every issued token at once.
- Every `/v1/...` call needs a live bearer token, else 401 in LeadNod's nested error format
  `{"error": {"code", "message", "param", "doc_url"}}`; `revoke_client()` makes even new tokens
  useless (API access withdrawn), `forbid()` answers 403.
- `POST /v1/webhooks` (url, events from the documented list, secret; a bad one is 400
  `invalid_parameter` naming the param), `GET /v1/analytics/summary`, `GET /v1/payments/balance`,
  `GET /v1/users/me`. `deliver(event_type, data)` then posts a signed event to the registered URL.
- `X-RateLimit-*` on every answer; 429 with `Retry-After` when the window is spent, or when
  scripted with `throttle_next()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections import Counter
from typing import Any

import requests
from flask import Flask, Response, request

from fakes.rate_window import ENVIRON_KEY, FixedWindow, carry_rate_headers
from fakes.server import ServedFake

EVENTS = (
    "user.created", "user.updated", "user.verified", "opportunity.created", "opportunity.updated",
    "opportunity.closed", "opportunity.matched", "engagement.created", "engagement.started",
    "engagement.completed", "engagement.terminated", "activity.logged", "payment.received",
    "payment.released", "escrow.funded", "escrow.dispute", "message.received", "conversation.started",
)


class FakeLeadNod(ServedFake):
    def __init__(self, client_id: str = "cli_test", client_secret: str = "cs_test", *, expires_in: int = 3600,
                 rate_limit: int = 1000, window: float = 60.0, token_delay: float = 0.0):
        self.client_id, self.client_secret = client_id, client_secret
        self.expires_in = expires_in
        self.rate_limit, self.window = rate_limit, window
        self.token_delay = token_delay  # seconds the token endpoint takes (to make races visible)
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch)
        self.tokens_issued = 0
        self.unauthorized = 0  # 401s answered on /v1
        self.requests: Counter[str] = Counter()
        self.webhooks: list[dict[str, Any]] = []
        self.revoked = self.forbidden = False
        self.too_many = 0
        self._throttle: list[str] = []
        self._window = FixedWindow()
        self._lock = threading.Lock()
        self.app = self._build()

    # --- scripting ------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {token: 0.0 for token in self.tokens}

    def throttle_next(self, count: int, retry_after: str = "0") -> None:
        """The next `count` API calls answer 429 with this Retry-After (seconds or an HTTP date)."""
        self._throttle.extend([retry_after] * count)

    def revoke_client(self) -> None:
        self.revoked = True

    def forbid(self) -> None:
        self.forbidden = True

    def deliver(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                webhook: int = -1) -> requests.Response:
        """POST a signed `{id, type, created, data}` event to a registered webhook, as LeadNod does."""
        hook = self.webhooks[webhook]
        body = json.dumps({"id": event_id or f"evt_{secrets.token_hex(6)}", "type": event_type,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}).encode()
        signature = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
        return requests.post(hook["url"], data=body, timeout=10,
                             headers={"Content-Type": "application/json", "X-LeadNod-Signature": signature})

    # --- the app --------------------------------------------------------------------------
    def _build(self) -> Flask:
        app = Flask("fake_leadnod")

        def answer(status: int, body: Any) -> Response:
            return Response(json.dumps(body), status=status, mimetype="application/json")

        def problem(status: int, code: str, message: str, param: str | None = None) -> Response:
            return answer(status, {"error": {"code": code, "message": message, "param": param,
                                             "doc_url": f"https://docs.leadnod.com/errors/{code}"}})

        @app.before_request
        def gate() -> Response | None:
            self.requests[f"{request.method} {request.path}"] += 1
            headers, allowed = self._window.take(self.rate_limit, self.window)
            request.environ[ENVIRON_KEY] = headers
            if self._throttle and request.path.startswith("/v1/"):
                self.too_many += 1
                response = problem(429, "rate_limit_exceeded", "Too many requests")
                response.headers["Retry-After"] = self._throttle.pop(0)
                return response
            if not allowed:
                self.too_many += 1
                response = problem(429, "rate_limit_exceeded", "Too many requests")
                response.headers["Retry-After"] = str(max(1, math.ceil(float(headers["X-RateLimit-Reset"])
                                                                       - time.time())))
                return response
            if request.path.startswith("/v1/"):
                given = request.headers.get("Authorization", "")
                token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
                with self._lock:
                    live = token in self.tokens and self.tokens[token] > time.time()
                if not live or self.revoked:
                    self.unauthorized += 1
                    return problem(401, "invalid_token", "The access token is missing, invalid or expired")
                if self.forbidden:
                    return problem(403, "insufficient_scope", "Your plan does not include API access")
            return None

        carry_rate_headers(app)

        @app.post("/oauth/token")
        def token() -> Any:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return answer(400, {"error": "invalid_request", "error_description": "JSON body required"})
            if body.get("grant_type") != "client_credentials":
                return answer(400, {"error": "unsupported_grant_type",
                                    "error_description": "only client_credentials is supported"})
            if not (hmac.compare_digest(str(body.get("client_id", "")), self.client_id)
                    and hmac.compare_digest(str(body.get("client_secret", "")), self.client_secret)):
                return answer(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
            if self.token_delay:
                time.sleep(self.token_delay)
            issued = f"eyJ.{secrets.token_urlsafe(16)}"
            with self._lock:
                self.tokens[issued] = time.time() + self.expires_in
                self.tokens_issued += 1
            return answer(200, {"access_token": issued, "token_type": "Bearer", "expires_in": self.expires_in,
                                "scope": "read write"})

        @app.post("/v1/webhooks")
        def register() -> Any:
            body = request.get_json(silent=True) or {}
            if not str(body.get("url", "")).startswith(("https://", "http://127.0.0.1")):
                return problem(400, "invalid_parameter", "The 'url' field must be an https URL.", "url")
            events = body.get("events")
            if not isinstance(events, list) or not events:
                return problem(400, "invalid_parameter", "The 'events' field must be a non-empty list.", "events")
            unknown = [e for e in events if e not in EVENTS]
            if unknown:
                return problem(400, "invalid_parameter", f"Unknown event type '{unknown[0]}'.", "events")
            hook = {"id": f"whk_{len(self.webhooks) + 1}", "url": body["url"], "events": events,
                    "secret": body.get("secret") or ""}
            self.webhooks.append(hook)
            return answer(201, {k: v for k, v in hook.items() if k != "secret"})

        @app.get("/v1/analytics/summary")
        def summary() -> Any:
            return answer(200, {"active_engagements": 3, "opportunities_open": 2, "revenue_generated": 125000})

        @app.get("/v1/payments/balance")
        def balance() -> Any:
            return answer(200, {"escrow_balance": 15000, "currency": "USD"})

        @app.get("/v1/users/me")
        def me() -> Any:
            return answer(200, {"id": "usr_abc123", "type": "client", "name": "John Smith", "company": "Acme Corp"})

        return app
