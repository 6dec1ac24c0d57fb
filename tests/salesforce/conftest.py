"""What the Salesforce tests share: a running fake org whose TLS certificate this process trusts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.destinations.salesforce import SalesforceDestination, Settings
from fakes.salesforce import FakeSalesforce, running, trust


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeSalesforce]:
    with running() as org:
        trust(monkeypatch, org, tmp_path)
        yield org


def session_destination(fake: FakeSalesforce, **settings: Any) -> SalesforceDestination:
    """A destination logged in with a session the fake issued (no login round trip)."""
    values = {"auth": "session", "session_id": fake.new_session(), "instance_url": fake.url, **settings}
    return SalesforceDestination("crm", Settings.model_validate(values))
