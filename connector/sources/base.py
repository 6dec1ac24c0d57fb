"""What a marketplace is to the pipeline: how its webhooks are signed and shaped, and its API.

Each marketplace is one subclass in one module of this package, listed by its `name` in
`connector.sources.MARKETPLACES`. The receiver only calls `verify` and `parse`; backfill and account commands call `api()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from connector.config import SourceConfig
from connector.errors import ConfigError
from connector.lead import InboundEvent
from connector.pacing import Budgets, local_budgets
from connector.timeutil import parse_iso


@dataclass
class ListedPage:
    """One page of a marketplace's lead list, as the backfill sees it."""

    leads: list[dict[str, Any]]  # summaries as listed (ids, and whatever the list carries)
    resume: dict[str, Any]  # what to pass back to `pages()` to continue after this page
    total: int | None = None


class MarketplaceApi:
    """A marketplace REST client, as backfill and the account commands use it.

    Every call is optional: a marketplace implements what its API offers, and the commands say
    plainly "this marketplace has no ..." for the rest (LeadNod, for one, has no lead list).
    """

    # The event types backfill gives a lead it finds for the first time, and a newer version of one
    # it holds: what the marketplace's own webhooks call them, so routes' `events:` filters apply.
    new_event_type: ClassVar[str] = "lead.new"
    updated_event_type: ClassVar[str] = "lead.updated"

    def pages(self, filters: dict[str, Any], resume: dict[str, Any] | None) -> Iterator[ListedPage]:
        """Yield list pages from `resume` (None: the start) until the list ends."""
        raise NotImplementedError("this marketplace has no lead list to backfill from")

    def detail(self, listed: dict[str, Any]) -> InboundEvent | None:
        """The full lead behind a listed summary, as an event; None when it is gone (404)."""
        raise NotImplementedError("this marketplace has no lead list to backfill from")

    def needs_detail(self, listed: dict[str, Any], stored: dict[str, Any] | None) -> bool:
        """Whether the stored copy (or nothing) is older than what the list shows."""
        return stored is None

    def register_webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        raise NotImplementedError("this marketplace has no webhook registration API")

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError("this marketplace has no statistics API")

    def close(self) -> None:  # noqa: B027 - clients without a session have nothing to release
        """Release connections once a command is done with the client."""


class InvalidPayload(Exception):
    """The body is not an event we can read: answered 400 `invalid_request`."""


class Marketplace(ABC):
    name: ClassVar[str]  # the `marketplace:` value in config
    signature_header: ClassVar[str]
    deliverable_events: ClassVar[frozenset[str]]  # event types that go on to destinations
    lead_fields: ClassVar[tuple[str, ...]] = ()  # canonical fields beyond connector.lead.CORE_LEAD_FIELDS
    ApiSettings: ClassVar[type[BaseModel] | None] = None  # the `api:` block of this source, if any
    lists_leads: ClassVar[bool] = False  # its API lists delivered leads (backfill and reconcile need that)

    def __init__(self, source_name: str, config: SourceConfig, budgets: Budgets | None = None):
        """`budgets`: where the API key's rate budget is kept (the runtime's database; without one, the process's)."""
        self.source_name = source_name
        self.config = config
        self._budgets = budgets

    @property
    def budgets(self) -> Budgets:
        return self._budgets or local_budgets()

    # --- signatures -------------------------------------------------------------------
    def sign(self, secret: str, body: bytes) -> str:
        """The signature header value the marketplace would send for `body` (hex HMAC-SHA256)."""
        return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> int | None:
        """Index of the configured secret that signed `body`, or None. Constant time per secret."""
        given = headers.get(self.signature_header)
        if not given:
            return None
        given_bytes = given.strip().encode()
        matched = None
        for index, secret in enumerate(self.config.secret_values()):
            if hmac.compare_digest(self.sign(secret, body).encode(), given_bytes) and matched is None:
                matched = index
        return matched

    # --- payloads ---------------------------------------------------------------------
    @staticmethod
    def load_event(body: bytes, type_field: str = "event") -> tuple[dict[str, Any], str]:
        """A webhook's JSON object and its event type, read from `type_field`; InvalidPayload if either is missing."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidPayload(f"body is not valid JSON: {exc}") from None
        except RecursionError:  # e.g. 100,000 nested arrays: a sender's mistake, not ours
            raise InvalidPayload("body is nested too deeply to read") from None
        if not isinstance(payload, dict):
            raise InvalidPayload("body must be a JSON object")
        event_type = payload.get(type_field)
        if not isinstance(event_type, str) or not event_type:
            raise InvalidPayload(f"payload has no event type ('{type_field}')")
        return payload, event_type

    @abstractmethod
    def parse(self, body: bytes) -> InboundEvent:
        """Read a verified body into an event with a canonical lead; InvalidPayload if we cannot."""

    @abstractmethod
    def sample_payload(self) -> dict[str, Any]:
        """A realistic webhook body, for `connector send-test` and `mappings preview`."""

    def api(self) -> MarketplaceApi:
        """The marketplace's REST client (backfill, stats, webhook registration), if it has one."""
        raise NotImplementedError(f"the {self.name} marketplace has no API client")

    def api_settings(self) -> Any:
        """This source's `api:` block as the marketplace's ApiSettings; a ConfigError names the key."""
        if self.ApiSettings is None:
            raise ConfigError(f"the {self.name} marketplace has no API", key=f"sources.{self.source_name}")
        try:
            return self.ApiSettings.model_validate(self.config.api or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'api'}: {err['msg']}"
                                 for err in exc.errors())
            raise ConfigError(problems, key=f"sources.{self.source_name}.api") from None

    def webhook_events(self) -> list[str]:
        """Event types to subscribe to when registering a webhook: `events:` in config, else the deliverable ones."""
        return list(self.config.events) if self.config.events else sorted(self.deliverable_events)


def event_time(*candidates: Any) -> float | None:
    for value in candidates:
        parsed = parse_iso(value) if isinstance(value, str) else None
        if parsed is not None:
            return parsed
    return None


def split_name(full_name: Any) -> tuple[str | None, str | None]:
    """`"Raj Sharma"` -> ("Raj", "Sharma"); `"Sharma, Raj"` -> ("Raj", "Sharma").

    Marketplaces that send one name field still need first and last names for CRMs. The first word
    is the first name and the rest the last name (so "Anna van der Berg" keeps her particles). A
    single word is the last name, because that is the field CRMs require (Salesforce LastName).
    """
    if not isinstance(full_name, str):
        return None, None
    if "," in full_name:
        last, _, first = full_name.partition(",")
        first, last = " ".join(first.split()), " ".join(last.split())
        return first or None, last or None
    words = full_name.split()
    if not words:
        return None, None
    if len(words) == 1:
        return None, words[0]
    return words[0], " ".join(words[1:])
