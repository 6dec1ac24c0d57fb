"""LeadOS: B2B `lead.delivered` webhooks signed `X-LeadOS-Signature: sha256=<hex>`, and its REST API.

A LeadOS lead is a person at a company (full name, job title, company name/domain/size/industry,
email and whether it is valid, LinkedIn, an intent summary). The canonical lead keeps every field
LeadOS sends and adds what CRMs need: first and last name split from `full_name`, and `city` /
`country` read from `geography`. Webhook and API list items are the same lead, so both become the
same document with the same dedupe key (the delivery id).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr

from connector.apiclient import ApiClient, RetryPolicy, VersionedRootSettings, marketplace_budget
from connector.errors import ConfigProblem, Permanent
from connector.lead import InboundEvent
from connector.sources.base import (
    InvalidPayload,
    ListedPage,
    Marketplace,
    MarketplaceApi,
    event_time,
    split_name,
)

LEAD_DELIVERED = "lead.delivered"
API_KEY_ENV = "LEADOS_API_KEY"


class LeadOSApiSettings(VersionedRootSettings):
    """The `api:` block of a LeadOS source (backfill, stats, webhook registration). Every key is optional."""

    base_url: str = Field(default="https://api.leados.net", description="LeadOS API root (with or without /v1)")
    api_key: SecretStr | None = Field(default=None,
                                      description=f"write ${{{API_KEY_ENV}}}; default: that variable")
    page_size: int = Field(default=100, ge=1, le=500, description="leads asked for per list page")


def _place(geography: Any) -> tuple[str | None, str | None]:
    """`"Kathmandu, Nepal"` -> ("Kathmandu", "Nepal"): first part the city, last part the country.

    A guess from free text ("Sandton, Gauteng" gives the country "Gauteng"), so the default
    Salesforce mapping (where Country may be a strict picklist) keeps `geography` whole instead.
    One part alone could be a city, a region or a country: nothing is derived from it.
    """
    if not isinstance(geography, str):
        return None, None
    parts = [p.strip() for p in geography.split(",") if p.strip()]
    if len(parts) < 2:
        return None, None
    return parts[0], parts[-1]


def canonical_lead(lead: dict[str, Any], envelope: dict[str, Any] | None = None) -> dict[str, Any]:
    """A webhook's `lead` (with its envelope) or an API list item -> the canonical LeadOS lead."""
    envelope = envelope or {}
    out = dict(lead)
    delivery_id = envelope.get("delivery_id") or lead.get("delivery_id") or lead.get("id")
    out["id"] = str(lead.get("id") or delivery_id)
    out["delivery_id"] = str(delivery_id) if delivery_id is not None else None
    out["campaign_id"] = envelope.get("campaign_id") or lead.get("campaign_id")
    first, last = split_name(lead.get("full_name"))
    city, country = _place(lead.get("geography"))
    for key, derived in (("first_name", first), ("last_name", last), ("city", city), ("country", country)):
        if out.get(key) in (None, ""):  # what LeadOS sends itself wins over what we derive
            out[key] = derived
    return out


class LeadOS(Marketplace):
    name = "leados"
    signature_header = "X-LeadOS-Signature"
    deliverable_events = frozenset({LEAD_DELIVERED})
    lead_fields = (
        "delivery_id", "campaign_id", "full_name", "job_title", "company_name", "company_domain",
        "company_size", "company_industry", "geography", "city", "country", "email_status",
        "linkedin_url", "intent_summary", "enrichment_level", "credits_consumed",
    )
    ApiSettings = LeadOSApiSettings
    lists_leads = True

    def sign(self, secret: str, body: bytes) -> str:
        """LeadOS prefixes the hex HMAC-SHA256 with the algorithm: `sha256=<hex>`."""
        return "sha256=" + super().sign(secret, body)

    def parse(self, body: bytes) -> InboundEvent:
        payload, event_type = self.load_event(body)
        lead = payload.get("lead")
        if event_type != LEAD_DELIVERED and not isinstance(lead, dict):
            # Another kind of notification (none is documented yet): kept so LeadOS stops
            # resending it, not delivered. Its delivery id, else its content, identifies it.
            key = payload.get("delivery_id") or payload.get("id") or hashlib.sha256(body).hexdigest()[:40]
            return InboundEvent(source=self.source_name, event_key=f"{event_type}:{key}", event_type=event_type,
                                occurred_at=event_time(payload.get("timestamp")) or time.time(),
                                lead_id=None, lead={}, deliverable=False)
        if not isinstance(lead, dict):
            raise InvalidPayload("a lead.delivered payload has no 'lead' object")
        return self.event_from_lead(lead, payload)

    def event_from_lead(self, lead: dict[str, Any], envelope: dict[str, Any] | None = None,
                        origin: str = "webhook") -> InboundEvent:
        """The webhook and the API list share this: same lead, same dedupe key, whichever came first."""
        document = canonical_lead(lead, envelope)
        if not document.get("delivery_id"):
            raise InvalidPayload("the lead has neither a 'delivery_id' nor an 'id'")
        event_type = (envelope or {}).get("event") or LEAD_DELIVERED
        return InboundEvent(
            source=self.source_name,
            event_key=document["delivery_id"],
            event_type=event_type,
            occurred_at=event_time(lead.get("delivered_at"), lead.get("created_at")) or time.time(),
            lead_id=document["id"],
            lead=document,
            deliverable=event_type in self.deliverable_events,
            origin=origin,
        )

    def api(self) -> LeadOSApi:
        settings: LeadOSApiSettings = self.api_settings()
        key = settings.api_key.get_secret_value() if settings.api_key else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise ConfigProblem(f"no LeadOS API key: set {API_KEY_ENV} (LeadOS > Settings > API Keys), or "
                                f"api_key: ${{SOME_VAR}} under sources.{self.source_name}.api", code="no_api_key")
        return LeadOSApi(self, settings, key.strip())

    def sample_payload(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        delivery = f"del_test{int(time.time() * 1000) % 10**9}"
        return {
            "event": LEAD_DELIVERED,
            "delivery_id": delivery,
            "campaign_id": "camp_test",
            "lead": {
                "id": delivery,
                "full_name": "Naledi Dlamini",
                "job_title": "Head of Operations",
                "company_name": "Karoo Logistics (Pty) Ltd",
                "company_domain": "karoologistics.co.za",
                "company_size": "51-200",
                "company_industry": "Logistics",
                "geography": "Cape Town, South Africa",
                "email": "naledi.d@example.com",
                "email_status": "valid",
                "phone": "+27215550123",
                "linkedin_url": "https://linkedin.com/in/naledidlamini",
                "score": 78,
                "intent_summary": "Comparing fleet telematics vendors for 40 trucks",
                "enrichment_level": "email_phone",
                "credits_consumed": 3,
                "delivered_at": now,
            },
        }


# --- the REST API ---------------------------------------------------------------------------------
_ITEM_KEYS = ("leads", "data", "items", "results")
_CURSOR_KEYS = ("next_cursor", "cursor", "next")
_NESTED_KEYS = ("pagination", "meta", "paging", "page_info")
_LAST_PAGE_KEYS = ("total_pages", "last_page", "pages")


@dataclass(frozen=True)
class PageAnswer:
    """What one `GET /v1/leads` answer says, whichever way LeadOS paginates.

    The reference only says "paginated", so we read both conventions: a next cursor (`next_cursor`,
    also inside `pagination`/`meta`) or page numbers (`page`, perhaps `total_pages`).
    """

    items: list[dict[str, Any]]
    cursor_mode: bool  # the answer has a cursor field (null on the last page)
    next_cursor: str | None
    next_page: int | None  # from a next-page link, when that is how the answer says it
    page: int | None
    last_page: int | None
    has_more: bool | None
    total: int | None

    @classmethod
    def read(cls, answer: Any) -> PageAnswer:
        if isinstance(answer, list):
            return cls(_leads(answer), False, None, None, None, None, None, None)
        if not isinstance(answer, dict):
            raise Permanent("LeadOS answered GET /v1/leads with neither a list nor an object",
                            code="unexpected_response")
        raw_items = next((answer[k] for k in _ITEM_KEYS if isinstance(answer.get(k), list)), None)
        if raw_items is None:
            raise Permanent(f"LeadOS answered GET /v1/leads without a list of leads (looked for "
                            f"{', '.join(_ITEM_KEYS)})", code="unexpected_response")
        places = [answer, *(answer[k] for k in _NESTED_KEYS if isinstance(answer.get(k), dict))]
        cursor_mode, cursor, next_page = False, None, None
        for place in places:
            for key in _CURSOR_KEYS:
                value = place.get(key)
                if key not in place or not (value is None or isinstance(value, str | int)):
                    continue
                if isinstance(value, str) and value.startswith(("http://", "https://", "/")):
                    # a next-page link: take its cursor or page number
                    query = parse_qs(urlsplit(value).query)
                    if query.get("cursor"):
                        cursor_mode, cursor = True, cursor or query["cursor"][0]
                    elif query.get("page", [""])[0].isdigit():
                        next_page = next_page or int(query["page"][0])
                    continue
                cursor_mode = True
                cursor = cursor or (str(value) if value not in (None, "") else None)
        return cls(
            items=_leads(raw_items),
            cursor_mode=cursor_mode,
            next_cursor=cursor,
            next_page=next_page,
            page=_first_int(places, ("page", "current_page")),
            last_page=_first_int(places, _LAST_PAGE_KEYS),
            has_more=next((p["has_more"] for p in places if isinstance(p.get("has_more"), bool)), None),
            total=_first_int(places, ("total", "total_count", "count")),
        )


def _leads(items: list[Any]) -> list[dict[str, Any]]:
    """The usable items, each with an `id` (backfill keys leads by it; LeadOS's is the delivery id)."""
    out = []
    for item in items:
        if isinstance(item, dict) and (item.get("id") or item.get("delivery_id")):
            out.append(item if item.get("id") else {**item, "id": item["delivery_id"]})
    return out


def _first_int(places: list[dict[str, Any]], keys: tuple[str, ...]) -> int | None:
    for place in places:
        for key in keys:
            value = place.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


class LeadOSApi(MarketplaceApi):
    """LeadOS's REST API (https://api.leados.net/v1) as backfill and the account commands use it.

    List items are full leads, so `detail` builds the event from the listed item with no request.
    """

    new_event_type = LEAD_DELIVERED  # LeadOS delivers a lead once; there are no updates
    updated_event_type = LEAD_DELIVERED
    # Backfill filters, sent as query parameters of these names. The reference says only "filterable",
    # so the connector also applies them itself to what comes back (delivered_at, campaign_id).
    FILTERS = ("date_from", "date_to", "campaign_id")
    HINTS = {
        401: f"check {API_KEY_ENV} (LeadOS > Settings > API Keys)",
        403: "this LeadOS API key may not do that: check its permissions in LeadOS",
        429: "the API key's rate limit is spent; another process may be using the same key",
    }

    def __init__(self, marketplace: LeadOS, settings: LeadOSApiSettings, api_key: str):
        self.marketplace = marketplace
        self.settings = settings
        self.page_size = settings.page_size
        budget = marketplace_budget(marketplace.budgets, "leados", api_key, requests_per_minute=settings.requests_per_minute,
                               reset_margin=settings.reset_margin, scope=settings.base_url)
        self.client = ApiClient("leados", f"{settings.base_url}/v1", headers={"Authorization": f"Bearer {api_key}"},
                                budget=budget, timeout=settings.timeout, hints=self.HINTS,
                                retry=RetryPolicy(attempts=settings.retries, base=settings.backoff))

    @property
    def rate(self) -> float:
        """Requests per second the key allows (for ETAs)."""
        return self.client.rate

    # --- backfill -------------------------------------------------------------------------
    def pages(self, filters: dict[str, Any], resume: dict[str, Any] | None) -> Iterator[ListedPage]:
        """Follow the list the way the answers say: a next cursor, else page numbers; stop on an empty page.

        Filters go to LeadOS as query parameters unchanged. A cursor or a page of leads that comes back
        a second time means the API is ignoring our paging: that stops the backfill with an error
        rather than loop forever.
        """
        state = dict(resume or {})
        base = self.list_params(filters)
        if state.get("end"):
            return
        cursor: str | None = state.get("cursor")
        page: int | None = state.get("page")
        seen_cursors: set[str] = {cursor} if cursor else set()
        previous_ids: list[str] | None = None
        while True:
            params = {**base, "limit": self.page_size}
            if cursor:
                params["cursor"] = cursor
            elif page:
                params["page"] = page
            answer = PageAnswer.read(self.client.get("/leads", params=params))
            if not answer.items:
                return
            ids = [str(item.get("delivery_id") or item.get("id")) for item in answer.items]
            if ids == previous_ids:
                raise Permanent("LeadOS returned the same page of leads twice: it is ignoring our paging "
                                f"({'cursor' if cursor else 'page'}); backfill stopped", code="pagination_loop")
            previous_ids = ids
            current = answer.page or page or 1
            if answer.next_cursor:
                if answer.next_cursor in seen_cursors:
                    raise Permanent("LeadOS returned a next cursor it had already given: backfill stopped",
                                    code="pagination_loop")
                seen_cursors.add(answer.next_cursor)
                cursor, page, after = answer.next_cursor, None, {"cursor": answer.next_cursor}
            elif answer.cursor_mode or cursor:
                after = {"end": True}  # cursor paging, and no next cursor: that was the last page
            else:
                following = answer.next_page or current + 1
                cursor, page, after = None, following, {"page": following}
            if answer.has_more is False or (answer.last_page is not None and current >= answer.last_page
                                            and not answer.next_cursor):
                after = {"end": True}
            yield ListedPage(leads=[item for item in answer.items if self._wanted(item, base)], resume=after,
                             total=answer.total)
            if after.get("end"):
                return

    def list_params(self, filters: dict[str, Any]) -> dict[str, str]:
        """Our filter names as query parameters; an unknown one is refused before any request."""
        unknown = sorted(k for k, v in filters.items() if k not in self.FILTERS and v not in (None, ""))
        if unknown:
            raise ConfigProblem(f"LeadOS cannot filter by {', '.join(unknown)} (it can by "
                                f"{', '.join(self.FILTERS)})", code="invalid_filter")
        return {k: str(v) for k, v in filters.items() if v not in (None, "")}

    @staticmethod
    def _wanted(item: dict[str, Any], params: dict[str, str]) -> bool:
        """The filters, applied to a listed lead (dates compare by day, YYYY-MM-DD, UTC)."""
        delivered = event_time(item.get("delivered_at"))
        day = time.strftime("%Y-%m-%d", time.gmtime(delivered)) if delivered is not None else None
        if day is not None and "date_from" in params and day < params["date_from"][:10]:
            return False
        if day is not None and "date_to" in params and day > params["date_to"][:10]:
            return False
        return "campaign_id" not in params or item.get("campaign_id") in (None, params["campaign_id"])

    def detail(self, listed: dict[str, Any]) -> InboundEvent | None:
        """The listed item is the whole lead: the same event a webhook would have made, no request."""
        return self.marketplace.event_from_lead(listed, None, origin="backfill")

    # --- account --------------------------------------------------------------------------
    def register_webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        answer = self.client.post("/webhooks", json={"url": url, "secret": secret, "events": events})
        return answer if isinstance(answer, dict) else {}

    def suppress(self, emails: list[str]) -> None:
        """Add emails to the account's suppression list (`POST /v1/suppression`, "Add emails to suppression
        list" in the API reference; the body `{"emails": [...]}` is our reading of that name): LeadOS stops
        selling us leads of people who asked to be erased (`connector forget --crm`)."""
        self.client.post("/suppression", json={"emails": emails})

    def stats(self) -> dict[str, Any]:
        """Deliveries by day (`GET /v1/leads/stats`) and the credit balance (`GET /v1/usage/balance`)."""
        return {"deliveries": self.client.get("/leads/stats"), "balance": self.client.get("/usage/balance")}

    def close(self) -> None:
        self.client.close()
