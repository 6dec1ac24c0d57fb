"""Leaditio: `lead.new` / `lead.updated` webhooks signed with X-Leaditio-Signature (hex HMAC-SHA256),
and its REST API (https://leaditio.com/api/v1) for backfill, account stats and webhook registration.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr

from connector.apiclient import ApiClient, ApiSettingsBase, RetryPolicy, marketplace_budget
from connector.errors import ConfigProblem, Permanent
from connector.lead import InboundEvent
from connector.pacing import Budgets
from connector.sources.base import InvalidPayload, ListedPage, Marketplace, MarketplaceApi, event_time
from connector.timeutil import parse_iso

API_KEY_ENV = "LEADITIO_API_KEY"
VERTICALS = ("solar", "insurance", "financial", "property")
SCORE_TIERS = ("hot", "warm", "qualified")
# What the list shows of a lead, compared with our stored copy to decide whether to fetch it again.
LISTED_FIELDS = ("vertical", "sub_vertical", "first_name", "suburb", "province", "score_tier", "service_type")


def canonical_lead(lead: dict[str, Any], contact: dict[str, Any] | None = None) -> dict[str, Any]:
    """Webhook (`lead` + `contact`) and API detail (contact inline) become the same document."""
    out = dict(lead)
    for key in ("phone", "email"):
        if contact and contact.get(key) is not None:
            out[key] = contact[key]
    return out


def content_hash(lead: dict[str, Any]) -> str:
    """A digest of a JSON document: the same content, however spelled, always gives the same event key."""
    text = json.dumps(lead, sort_keys=True, separators=(",", ":"))  # ASCII: lone surrogates escaped, not raised
    return hashlib.sha256(text.encode()).hexdigest()


class ApiSettings(ApiSettingsBase):
    """The `api:` block of a Leaditio source. Every key is optional."""

    base_url: str = Field(default="https://leaditio.com/api/v1", description="the API root")
    api_key: SecretStr | None = Field(default=None, description="write ${LEADITIO_API_KEY}; default: that variable")
    requests_per_minute: int = Field(default=60, gt=0, description="your plan's limit, until the API's headers say")
    page_size: int = Field(default=100, ge=1, le=100, description="leads per list page (the API's maximum is 100)")
    detail_concurrency: int = Field(default=4, ge=1, le=16,
                                    description="lead details fetched at once (the rate limit still sets the pace)")


class LeaditioApi(MarketplaceApi):
    """Leaditio's REST API as the backfill and account commands use it (see MarketplaceApi)."""

    FILTERS = ("vertical", "score_tier", "suburb", "date_from", "date_to")
    HINTS = {
        401: f"check {API_KEY_ENV} (Leaditio dashboard > Settings > API Access)",
        403: "your Leaditio plan does not include API access: upgrade the plan or ask Leaditio",
        429: "the API key's rate limit is spent; another process may be using the same key",
        "invalid_request": "a filter or parameter was refused: check the command's options",
        "internal_error": "Leaditio had a server error: run the same command again later (backfill resumes)",
    }

    def __init__(self, source_name: str, settings: ApiSettings, api_key: str, budgets: Budgets):
        self.source_name = source_name
        self.settings = settings
        self.page_size = settings.page_size
        self.detail_concurrency = settings.detail_concurrency
        budget = marketplace_budget(budgets, "leaditio", api_key, requests_per_minute=settings.requests_per_minute,
                               reset_margin=settings.reset_margin, scope=settings.base_url)
        self.client = ApiClient("leaditio", settings.base_url, headers={"Authorization": f"Bearer {api_key}"},
                                budget=budget, timeout=settings.timeout, hints=self.HINTS,
                                retry=RetryPolicy(attempts=settings.retries, base=settings.backoff))

    @property
    def rate(self) -> float:
        """Requests per second the key allows (for ETAs)."""
        return self.client.rate

    # --- backfill -------------------------------------------------------------------------
    def list_params(self, filters: dict[str, Any]) -> dict[str, str]:
        """Our filter names are Leaditio's query parameters; checked here so a typo costs no request."""
        unknown = sorted(set(filters) - set(self.FILTERS))
        if unknown:
            raise ConfigProblem(f"Leaditio cannot filter by {', '.join(unknown)} "
                                f"(it can by {', '.join(self.FILTERS)})", code="invalid_filter")
        params = {k: str(v) for k, v in filters.items() if v not in (None, "")}
        for name, allowed in (("vertical", VERTICALS), ("score_tier", SCORE_TIERS)):
            if name in params and params[name] not in allowed:
                raise ConfigProblem(f"Leaditio {name} must be one of {', '.join(allowed)}, not "
                                    f"'{params[name]}'", code="invalid_filter")
        return params

    def pages(self, filters: dict[str, Any], resume: dict[str, Any] | None) -> Iterator[ListedPage]:
        params = self.list_params(filters)
        page = int((resume or {}).get("page", 1))
        while True:
            data = self.client.get("/leads", params={**params, "page": page, "limit": self.page_size})
            if not isinstance(data, dict) or not isinstance(data.get("leads"), list):
                raise Permanent("Leaditio answered GET /leads without a 'leads' list", code="unexpected_response")
            leads = [lead for lead in data["leads"] if isinstance(lead, dict) and lead.get("id")]
            total = data.get("total") if isinstance(data.get("total"), int) else None
            yield ListedPage(leads=leads, resume={"page": page + 1}, total=total)
            if len(data["leads"]) < self.page_size or (total is not None and page * self.page_size >= total):
                return
            page += 1

    def detail(self, listed: dict[str, Any]) -> InboundEvent | None:
        lead_id = str(listed["id"])
        data = self.client.get(f"/leads/{quote(lead_id, safe='')}", missing_ok=True)
        if data is None:
            return None
        if not isinstance(data, dict) or not data.get("id"):
            raise Permanent(f"Leaditio answered GET /leads/{lead_id} without a lead", code="unexpected_response")
        body = dict(data)
        contact = body.pop("contact", None)
        lead = canonical_lead(body, contact if isinstance(contact, dict) else None)
        occurred = event_time(lead.get("delivered_at"), lead.get("created_at")) or time.time()
        return InboundEvent(source=self.source_name, event_key=f"backfill:{lead_id}:{content_hash(lead)}",
                            event_type="lead.new", occurred_at=occurred, lead_id=lead_id, lead=lead,
                            origin="backfill")

    def needs_detail(self, listed: dict[str, Any], stored: dict[str, Any] | None) -> bool:
        """Fetch unless our copy is as new as the listing: same delivery time and listed fields, or newer."""
        if stored is None:
            return True
        listed_at, stored_at = parse_iso(listed.get("delivered_at")), parse_iso(stored.get("delivered_at"))
        if listed_at is not None and stored_at is not None and listed_at != stored_at:
            return listed_at > stored_at
        return any(key in listed and listed[key] != stored.get(key) for key in LISTED_FIELDS)

    # --- account --------------------------------------------------------------------------
    def register_webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        answer = self.client.post("/leads/webhook", json={"url": url, "secret": secret, "events": events})
        return answer if isinstance(answer, dict) else {}

    def stats(self) -> dict[str, Any]:
        answer = self.client.get("/account/stats")
        return answer if isinstance(answer, dict) else {}

    def close(self) -> None:
        self.client.close()


class Leaditio(Marketplace):
    name = "leaditio"
    signature_header = "X-Leaditio-Signature"
    deliverable_events = frozenset({"lead.new", "lead.updated"})
    ApiSettings = ApiSettings
    lists_leads = True

    def api(self) -> LeaditioApi:
        settings: ApiSettings = self.api_settings()
        key = settings.api_key.get_secret_value() if settings.api_key else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise ConfigProblem(f"no Leaditio API key: set {API_KEY_ENV} (Leaditio dashboard > Settings > "
                                f"API Access), or api_key: ${{SOME_VAR}} under sources.{self.source_name}.api",
                                code="no_api_key")
        return LeaditioApi(self.source_name, settings, key.strip(), self.budgets)

    def parse(self, body: bytes) -> InboundEvent:
        payload, event_type = self.load_event(body)
        lead = payload.get("lead")
        if not isinstance(lead, dict) or not lead.get("id"):
            raise InvalidPayload("payload has no 'lead' with an 'id'")
        contact = payload.get("contact") if isinstance(payload.get("contact"), dict) else None
        timestamp = payload.get("timestamp")
        occurred = event_time(timestamp, lead.get("delivered_at")) or time.time()
        lead_id = str(lead["id"])
        return InboundEvent(
            source=self.source_name,
            # Leaditio sends no event id, and its timestamps have 1-second resolution: the event, lead,
            # moment and content identify it. The same body twice is one event; two updates of one
            # lead in the same second are two. (The store hashes keys too long for its column.)
            event_key=f"{event_type}:{lead_id}:{timestamp or occurred}:{content_hash(payload)}",
            event_type=event_type,
            occurred_at=occurred,
            lead_id=lead_id,
            lead=canonical_lead(lead, contact),
            deliverable=event_type in self.deliverable_events,
        )

    def sample_payload(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            "event": "lead.new",
            "timestamp": now,
            "lead": {
                "id": f"lead_test{int(time.time() * 1000) % 10**9}",
                "vertical": "solar",
                "sub_vertical": "installation",
                "first_name": "Thabo",
                "suburb": "Sandton",
                "province": "Gauteng",
                "score": 87,
                "score_tier": "hot",
                "service_type": "Solar Installation 10kW+",
                "budget_range": "R100,000–R150,000",
                "urgency": "asap",
                "score_breakdown": {"phone_valid": 10, "email_valid": 8, "suburb_match": 8},
                "delivered_at": now,
                "created_at": now,
            },
            "contact": {"phone": "+27823456789", "email": "thabo.m@example.com"},
        }
