"""What a marketplace is to the pipeline: how its webhooks are signed and shaped, and its API.

Each marketplace is one subclass in one module of this package; the registry finds it by its
`name`. The receiver only calls `verify` and `parse`; backfill and account commands call `api()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from connector.lead import InboundEvent

if TYPE_CHECKING:
    from connector.config import SourceConfig


@dataclass
class ListedPage:
    """One page of a marketplace's lead list, as the backfill sees it."""

    leads: list[dict[str, Any]]  # summaries as listed (ids, and whatever the list carries)
    resume: dict[str, Any]  # what to pass back to `pages()` to continue after this page
    total: int | None = None


class MarketplaceApi(ABC):
    """A marketplace REST client, as backfill and the account commands use it."""

    @abstractmethod
    def pages(self, filters: dict[str, Any], resume: dict[str, Any] | None) -> Iterator[ListedPage]:
        """Yield list pages from `resume` (None: the start) until the list ends."""

    @abstractmethod
    def detail(self, listed: dict[str, Any]) -> InboundEvent | None:
        """The full lead behind a listed summary, as an event; None when it is gone (404)."""

    def needs_detail(self, listed: dict[str, Any], stored: dict[str, Any] | None) -> bool:
        """Whether the stored copy (or nothing) is older than what the list shows."""
        return stored is None

    def register_webhook(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        raise NotImplementedError("this marketplace has no webhook registration API")

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError("this marketplace has no statistics API")


class InvalidPayload(Exception):
    """The body is not an event we can read: answered 400 `invalid_request`."""


class Marketplace(ABC):
    name: ClassVar[str]  # the `marketplace:` value in config
    signature_header: ClassVar[str]
    deliverable_events: ClassVar[frozenset[str]]  # event types that go on to destinations
    lead_fields: ClassVar[tuple[str, ...]] = ()  # canonical fields beyond connector.lead.CORE_LEAD_FIELDS
    ApiSettings: ClassVar[type[BaseModel] | None] = None  # the `api:` block of this source, if any

    registry: ClassVar[dict[str, type[Marketplace]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            Marketplace.registry[cls.name] = cls

    def __init__(self, source_name: str, config: SourceConfig):
        self.source_name = source_name
        self.config = config

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
    def load_json(body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidPayload(f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise InvalidPayload("body must be a JSON object")
        return payload

    @abstractmethod
    def parse(self, body: bytes) -> InboundEvent:
        """Read a verified body into an event with a canonical lead; InvalidPayload if we cannot."""

    @abstractmethod
    def sample_payload(self) -> dict[str, Any]:
        """A realistic webhook body, for `connector send-test` and `mappings preview`."""

    def api(self) -> MarketplaceApi:
        """The marketplace's REST client (backfill, stats, webhook registration), if it has one."""
        raise NotImplementedError(f"the {self.name} marketplace has no API client")


def event_time(*candidates: Any) -> float | None:
    from connector.timeutil import parse_iso

    for value in candidates:
        parsed = parse_iso(value) if isinstance(value, str) else None
        if parsed is not None:
            return parsed
    return None
