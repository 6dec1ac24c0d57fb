"""LeadNod: `{id, type, created, data}` webhooks signed with X-LeadNod-Signature (hex HMAC-SHA256).

LeadNod is a marketplace of sales engagements rather than of single leads: its events are about
users, opportunities, engagements, activities, payments and messages. Each event's `data` object
becomes the canonical "lead" (its fields at the top level, so a mapping reads `status` or
`base_salary_range.min`), plus `id` = the id of the object the event is about (engagement_id for
engagement events, opportunity_id for opportunity events, ...), `object_type`, `event_id` and
`created`. Routes pick which event types go where (`events:` filters).

Deliverable: every event type LeadNod documents (`DOCUMENTED_EVENTS`). An undocumented type is
stored, so LeadNod stops resending it, but delivered nowhere until we know its shape.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth
from pydantic import Field, SecretStr

from connector.apiclient import ApiClient, RetryPolicy, VersionedRootSettings, marketplace_budget
from connector.errors import ConfigProblem, ConnectorError, Permanent, classify, parse_retry_after
from connector.lead import InboundEvent
from connector.pacing import Budget, Budgets
from connector.sources.base import (
    InvalidPayload,
    ListedPage,
    Marketplace,
    MarketplaceApi,
    event_time,
    split_name,
)

log = logging.getLogger(__name__)

DOCUMENTED_EVENTS = frozenset({
    "user.created", "user.updated", "user.verified",
    "opportunity.created", "opportunity.updated", "opportunity.closed", "opportunity.matched",
    "engagement.created", "engagement.started", "engagement.completed", "engagement.terminated",
    "activity.logged",
    "payment.received", "payment.released", "escrow.funded", "escrow.dispute",
    "message.received", "conversation.started",
})

CLIENT_ID_ENV = "LEADNOD_CLIENT_ID"
CLIENT_SECRET_ENV = "LEADNOD_CLIENT_SECRET"

# Where each kind of event keeps the id of the object it is about, most specific first.
_MAIN_ID_KEYS: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "id"),
    "opportunity": ("opportunity_id", "id"),
    "engagement": ("engagement_id", "id"),
    "activity": ("activity_id", "id", "engagement_id"),
    "payment": ("payment_id", "id", "engagement_id"),
    "escrow": ("escrow_id", "id", "engagement_id"),
    "message": ("message_id", "id", "conversation_id"),
    "conversation": ("conversation_id", "id"),
}


class LeadNodApiSettings(VersionedRootSettings):
    """The `api:` block of a LeadNod source (webhook registration, stats). Every key is optional."""

    base_url: str = Field(default="https://api.leadnod.com",
                          description="API root (with or without /v1); sandbox: https://sandbox.api.leadnod.com")
    client_id: str | None = Field(default=None,
                                  description=f"OAuth client id, e.g. ${{{CLIENT_ID_ENV}}}; default: that variable")
    client_secret: SecretStr | None = Field(default=None,
                                            description=f"write ${{{CLIENT_SECRET_ENV}}}; default: that variable")
    token_url: str | None = Field(default=None, description="default: <base_url>/oauth/token")
    requests_per_minute: int = Field(default=60, gt=0,
                                     description="your plan's limit (Professional 60, Enterprise 300)")
    token_renew_before: float = Field(default=60.0, ge=0,
                                      description="renew the access token this many seconds before it expires")

    @property
    def token_endpoint(self) -> str:
        return self.token_url or f"{self.base_url}/oauth/token"


def object_type(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def main_object_id(event_type: str, data: dict[str, Any]) -> str | None:
    """The id of what the event is about; None when the data names none (the event id stands in)."""
    kind = object_type(event_type)
    for key in _MAIN_ID_KEYS.get(kind, (f"{kind}_id", "id")):
        value = data.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def canonical_lead(envelope: dict[str, Any]) -> dict[str, Any]:
    """An event envelope -> the flat document mappings read (see the module docstring)."""
    data = envelope.get("data") or {}
    event_type = str(envelope.get("type"))
    out = dict(data)
    out["id"] = main_object_id(event_type, data)
    out["object_type"] = object_type(event_type)
    out["event_id"] = str(envelope.get("id"))
    out["created"] = envelope.get("created")
    if isinstance(data.get("name"), str) and not data.get("first_name") and not data.get("last_name"):
        out["first_name"], out["last_name"] = split_name(data["name"])
    return out


class LeadNod(Marketplace):
    name = "leadnod"
    signature_header = "X-LeadNod-Signature"
    deliverable_events = DOCUMENTED_EVENTS
    lead_fields = (
        # added by the connector
        "object_type", "event_id", "created",
        # data fields in LeadNod's documented events and objects
        "engagement_id", "client_id", "sales_pro_id", "status", "opportunity_id", "activity_id",
        "payment_id", "escrow_id", "message_id", "conversation_id", "user_id", "type", "name",
        "company", "industry", "profile", "title", "description", "compensation_model",
        "base_salary_range", "commission_rate", "duration", "requirements", "amount", "currency",
        "created_at", "updated_at",
    )
    ApiSettings = LeadNodApiSettings

    def parse(self, body: bytes) -> InboundEvent:
        envelope, event_type = self.load_event(body, "type")
        event_id, data = envelope.get("id"), envelope.get("data")
        if not isinstance(event_id, str | int) or event_id in ("", None):
            raise InvalidPayload("payload has no event 'id'")
        if not isinstance(data, dict):
            raise InvalidPayload("payload has no 'data' object")
        lead = canonical_lead(envelope)
        return InboundEvent(
            source=self.source_name,
            event_key=str(event_id),
            event_type=event_type,
            occurred_at=event_time(envelope.get("created"), data.get("updated_at"), data.get("created_at"))
            or time.time(),
            lead_id=lead["id"],
            lead=lead,
            deliverable=event_type in self.deliverable_events,
        )

    def sample_payload(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        suffix = int(time.time() * 1000) % 10**9
        return {
            "id": f"evt_test{suffix}",
            "type": "engagement.created",
            "created": now,
            "data": {
                "engagement_id": f"eng_test{suffix}",
                "client_id": "usr_test_client",
                "sales_pro_id": "usr_test_pro",
                "status": "pending",
            },
        }

    def api(self) -> LeadNodApi:
        settings: LeadNodApiSettings = self.api_settings()
        client_id = (settings.client_id or os.environ.get(CLIENT_ID_ENV, "")).strip()
        secret = (settings.client_secret.get_secret_value() if settings.client_secret
                  else os.environ.get(CLIENT_SECRET_ENV, "")).strip()
        if not client_id or not secret:
            raise ConfigProblem(f"no LeadNod API credentials: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} "
                                f"(LeadNod > API credentials), or client_id / client_secret: ${{SOME_VAR}} under "
                                f"sources.{self.source_name}.api", code="no_api_key")
        return LeadNodApi(settings, client_id, secret, self.budgets)


# --- the REST API: OAuth 2.0 client credentials ---------------------------------------------------
class LeadNodApiClient(ApiClient):
    """The shared ApiClient, plus LeadNod's two particulars: a bearer token from `AccessTokens` on
    every request (so retries after a long wait carry a fresh one), and its nested error body
    `{"error": {"code", "message", "param"}}`, classified with `param` as the field to blame.
    """

    def __init__(self, *args: Any, auth: requests.auth.AuthBase | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.auth = auth

    @property
    def session(self) -> requests.Session:
        session = super().session
        session.auth = self.auth
        return session

    def _classify(self, response: requests.Response) -> ConnectorError:
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return super()._classify(response)  # flat bodies, and OAuth's {"error": "invalid_client"}
        code, param = error.get("code"), error.get("param")
        return classify("leadnod", status=response.status_code, code=str(code) if code else None,
                        message=str(error.get("message") or response.reason or ""),
                        field=str(param) if param else None,
                        retry_after=parse_retry_after(response.headers.get("Retry-After")))


class AccessTokens:
    """The access token of one LeadNod client id, shared by every client in the process.

    Fetched with `POST /oauth/token` (JSON body, grant_type client_credentials), kept until
    `renew_before` seconds before its `expires_in` runs out (at most half its life), and renewed
    at once when the API answers 401. One lock: concurrent callers wait for one fetch, never make
    several. The secret and the token stay in memory only and are never logged.
    """

    def __init__(self, client: ApiClient, path: str, client_id: str, client_secret: str, renew_before: float,
                 clock: Callable[[], float] = time.time):
        self.client, self.path = client, path
        self.client_id, self._secret = client_id, client_secret
        self.renew_before = renew_before
        self.clock = clock
        self.issued = 0  # tokens fetched, for tests and the summary
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def renew(self, stale: str | None) -> str:
        """The API refused `stale`: fetch a new token, unless another thread already did."""
        with self._lock:
            if self._token is None or self._token == stale:
                self._fetch()
            assert self._token is not None
            return self._token

    def use_secret(self, client_secret: str) -> None:
        with self._lock:
            if client_secret != self._secret:
                self._secret, self._token = client_secret, None

    def _fetch(self) -> None:
        answer = self.client.post(self.path, json={"grant_type": "client_credentials",
                                                   "client_id": self.client_id, "client_secret": self._secret})
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise Permanent("LeadNod's token endpoint answered without an access_token", code="unexpected_response")
        token_type = str(answer.get("token_type") or "Bearer")
        if token_type.lower() != "bearer":
            raise Permanent(f"LeadNod issued a '{token_type}' token; only Bearer tokens are supported",
                            code="unexpected_response")
        lifetime = answer.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 3600.0
        self._token = token
        self._renew_at = self.clock() + lifetime - min(self.renew_before, lifetime / 2)
        self.issued += 1
        log.info("LeadNod access token issued for client %s (valid %.0fs)", self.client_id, lifetime)


_TOKENS: dict[tuple[str, str], AccessTokens] = {}
_TOKENS_LOCK = threading.Lock()


def shared_tokens(settings: LeadNodApiSettings, client_id: str, client_secret: str,
                  budget: Budget) -> AccessTokens:
    """The process's one `AccessTokens` for this token endpoint and client id."""
    key = (settings.token_endpoint, client_id)
    with _TOKENS_LOCK:
        tokens = _TOKENS.get(key)
        if tokens is None:
            parts = urlsplit(settings.token_endpoint)
            client = LeadNodApiClient("leadnod", f"{parts.scheme}://{parts.netloc}", headers={}, budget=budget,
                                      timeout=settings.timeout, hints=LeadNodApi.HINTS,
                                      retry=RetryPolicy(attempts=settings.retries, base=settings.backoff))
            tokens = _TOKENS[key] = AccessTokens(client, parts.path or "/", client_id, client_secret,
                                                 settings.token_renew_before)
    tokens.use_secret(client_secret)
    return tokens


class BearerToken(requests.auth.AuthBase):
    """Puts the current access token on each request and remembers, per thread, which one it sent."""

    def __init__(self, tokens: AccessTokens):
        self.tokens = tokens
        self._local = threading.local()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.tokens.current()
        self._local.token = token
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    @property
    def last_sent(self) -> str | None:
        return getattr(self._local, "token", None)


class LeadNodApi(MarketplaceApi):
    """LeadNod's REST API (https://api.leadnod.com/v1): webhook registration and account stats.

    LeadNod has no list of leads, so there is no backfill: its events arrive by webhook only.
    """

    HINTS = {
        401: f"check {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (LeadNod > API credentials)",
        "invalid_client": f"LeadNod refused the client credentials: check {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}",
        403: "API access needs LeadNod's Professional or Enterprise plan, or a scope this client lacks",
        429: "the client's rate limit is spent; another process may be using the same credentials",
    }

    def __init__(self, settings: LeadNodApiSettings, client_id: str, client_secret: str, budgets: Budgets):
        self.settings = settings
        budget = marketplace_budget(budgets, "leadnod", client_id, requests_per_minute=settings.requests_per_minute,
                               reset_margin=settings.reset_margin, scope=settings.base_url)
        self.tokens = shared_tokens(settings, client_id, client_secret, budget)
        self.auth = BearerToken(self.tokens)
        self.client = LeadNodApiClient("leadnod", f"{settings.base_url}/v1", headers={}, budget=budget,
                                       timeout=settings.timeout, hints=self.HINTS, auth=self.auth,
                                       retry=RetryPolicy(attempts=settings.retries, base=settings.backoff))

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        """One API call; a 401 (token expired or revoked early) renews the token and tries once more."""
        self.tokens.current()  # a refused client secret fails here, before any API request is charged
        try:
            return self.client.request(method, path, retry_server_errors=method == "GET", **kw)
        except ConfigProblem as exc:
            if exc.status != 401:
                raise
            log.info("LeadNod answered 401: renewing the access token once")
        self.tokens.renew(self.auth.last_sent)
        return self.client.request(method, path, retry_server_errors=method == "GET", **kw)

    def pages(self, filters: dict[str, Any], resume: dict[str, Any] | None) -> Iterator[ListedPage]:
        raise NotImplementedError("LeadNod has no list of leads to backfill from: its events arrive by "
                                  "webhook only (register one with `connector webhooks register`)")

    def register_webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        answer = self._call("POST", "/webhooks", json={"url": url, "events": events, "secret": secret})
        return answer if isinstance(answer, dict) else {}

    def stats(self) -> dict[str, Any]:
        """`GET /v1/analytics/summary` and the escrow balance (`GET /v1/payments/balance`)."""
        return {"analytics": self._call("GET", "/analytics/summary"),
                "escrow_balance": self._call("GET", "/payments/balance")}

    def close(self) -> None:
        self.client.close()
