"""Salesforce: leads become Leads (or any object), upserted by an external id.

destination.py sends; settings.py is the config block; auth.py logs in; check.py and setup.py compare
a mapping with the org and prepare it; errors.py reads Salesforce's answers.

`SalesforceDestination` is imported from here on first use only (PEP 562): the settings are needed by
every process, simple-salesforce only where leads are sent (see connector.destinations).
"""

from typing import Any

from connector.destinations.salesforce.settings import Settings


def __getattr__(name: str) -> Any:
    if name == "SalesforceDestination":
        from connector.destinations.salesforce.destination import SalesforceDestination
        return SalesforceDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SalesforceDestination", "Settings"]
