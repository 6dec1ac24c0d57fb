"""Salesforce: leads become Leads (or any object), upserted by an external id.

destination.py sends; settings.py is the config block; auth.py logs in; check.py and setup.py compare
a mapping with the org and prepare it; errors.py reads Salesforce's answers.
"""

from connector.destinations.salesforce.destination import SalesforceDestination
from connector.destinations.salesforce.settings import Settings

__all__ = ["SalesforceDestination", "Settings"]
