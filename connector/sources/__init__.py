"""Marketplaces. `MARKETPLACES` is the registry: a new marketplace is one line here."""

from connector.sources.base import InvalidPayload, Marketplace
from connector.sources.leaditio import Leaditio
from connector.sources.leadnod import LeadNod
from connector.sources.leados import LeadOS

# The `marketplace:` value in config -> the class that reads its webhooks and API.
MARKETPLACES: dict[str, type[Marketplace]] = {cls.name: cls for cls in (Leaditio, LeadOS, LeadNod)}


def marketplace_class(name: str) -> type[Marketplace]:
    return MARKETPLACES[name]


__all__ = ["MARKETPLACES", "InvalidPayload", "Marketplace", "marketplace_class"]
