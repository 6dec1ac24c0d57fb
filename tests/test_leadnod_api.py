"""The LeadNod API client against a local fake LeadNod over real HTTP: OAuth tokens, errors, webhooks."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connector.config import SourceConfig
from connector.errors import ConfigProblem, Permanent
from connector.sources.leadnod import LeadNod, LeadNodApi
from fakes.leadnod_api import FakeLeadNod


def api_for(fake: FakeLeadNod, source: str = "leadnod", **api: Any) -> LeadNodApi:
    settings = {"base_url": fake.url, "client_id": fake.client_id, "client_secret": fake.client_secret,
                "retries": 2, "backoff": 0.01, **api}
    return LeadNod(source, SourceConfig(marketplace="leadnod", secrets=["whsec"], api=settings)).api()


def new_fake(**kw: Any) -> FakeLeadNod:
    # A client id of its own per test: tokens and rate budgets are shared per client id in the process.
    return FakeLeadNod(client_id=f"cli_{uuid.uuid4().hex[:12]}", client_secret="cs_" + uuid.uuid4().hex, **kw)


@pytest.fixture
def fake() -> Iterator[FakeLeadNod]:
    fake = new_fake()
    with fake.running():
        yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_one_token_serves_many_calls(fake: FakeLeadNod) -> None:
    api = api_for(fake)
    first, second = api.stats(), api.stats()
    assert first == second == {"analytics": {"active_engagements": 3, "opportunities_open": 2,
                                             "revenue_generated": 125000},
                               "escrow_balance": {"escrow_balance": 15000, "currency": "USD"}}
    assert fake.tokens_issued == 1
    assert fake.requests["POST /oauth/token"] == 1
    assert fake.unauthorized == 0


def test_clients_with_the_same_client_id_share_the_token(fake: FakeLeadNod) -> None:
    one, two = api_for(fake, "leadnod_sales"), api_for(fake, "leadnod_ops")
    one.stats()
    two.register_webhook("https://crm.example/webhooks/leadnod_ops", "whsec_2", ["engagement.created"])
    assert one.tokens is two.tokens
    assert fake.tokens_issued == 1


def test_another_client_id_gets_its_own_token(fake: FakeLeadNod) -> None:
    other = new_fake()
    with other.running():
        api_for(fake).stats()
        api_for(other).stats()
    assert (fake.tokens_issued, other.tokens_issued) == (1, 1)


def test_the_token_is_renewed_before_it_expires() -> None:
    fake = new_fake(expires_in=3600)
    with fake.running():
        api = api_for(fake, token_renew_before=60)
        clock = api.tokens.clock = Clock()
        api.stats()
        clock.now += 3600 - 61  # still more than a minute left: kept
        api.stats()
        assert fake.tokens_issued == 1
        clock.now += 2  # under a minute left: renewed before LeadNod would refuse it
        api.stats()
    assert fake.tokens_issued == 2
    assert fake.unauthorized == 0


def test_a_short_lived_token_is_renewed_at_half_its_life() -> None:
    fake = new_fake(expires_in=40)
    with fake.running():
        api = api_for(fake, token_renew_before=60)
        clock = api.tokens.clock = Clock()
        api.stats()
        clock.now += 19
        api.stats()
        assert fake.tokens_issued == 1
        clock.now += 2
        api.stats()
    assert fake.tokens_issued == 2


def test_a_401_on_an_expired_token_renews_it_and_the_call_succeeds(fake: FakeLeadNod) -> None:
    api = api_for(fake)
    api.stats()
    fake.expire_tokens()  # LeadNod ended the token early (or our clock is wrong)
    assert api.register_webhook("https://crm.example/webhooks/leadnod", "whsec_1", ["engagement.created"])["id"]
    assert fake.unauthorized == 1
    assert fake.tokens_issued == 2
    assert fake.requests["POST /v1/webhooks"] == 2  # refused once, then taken with the new token


def test_a_401_that_survives_a_new_token_is_a_config_problem_without_looping(fake: FakeLeadNod) -> None:
    api = api_for(fake)
    fake.revoke_client()
    with pytest.raises(ConfigProblem) as caught:
        api.stats()
    assert caught.value.status == 401
    assert "LEADNOD_CLIENT_ID" in str(caught.value)
    assert fake.tokens_issued == 2 and fake.unauthorized == 2


def test_wrong_client_secret_is_a_config_problem_and_no_api_call_is_made(fake: FakeLeadNod) -> None:
    api = api_for(fake, client_secret="cs_wrong")
    with pytest.raises(ConfigProblem) as caught:
        api.stats()
    assert caught.value.code == "invalid_client"
    assert "LEADNOD_CLIENT_SECRET" in str(caught.value)
    assert not any(key.startswith("GET /v1") for key in fake.requests)


def test_a_changed_secret_replaces_the_shared_token(fake: FakeLeadNod) -> None:
    with pytest.raises(ConfigProblem):
        api_for(fake, client_secret="cs_old").stats()
    api_for(fake).stats()  # the config now has the right secret: the shared token source takes it
    assert fake.tokens_issued == 1


def test_concurrent_callers_wait_for_one_token() -> None:
    fake = new_fake(token_delay=0.2)
    with fake.running():
        api = api_for(fake)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                api.stats()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert fake.tokens_issued == 1
    assert fake.requests["GET /v1/analytics/summary"] == 8


def test_nested_error_is_classified_with_code_and_param(fake: FakeLeadNod) -> None:
    with pytest.raises(Permanent) as caught:
        api_for(fake).register_webhook("https://crm.example/webhooks/leadnod", "whsec_1", ["lead.new"])
    error = caught.value
    assert (error.code, error.field, error.status) == ("invalid_parameter", "events", 400)
    assert "Unknown event type 'lead.new'" in error.message
    assert error.describe().startswith("[invalid_parameter, field events]")


def test_forbidden_is_a_config_problem_with_the_plan_hint(fake: FakeLeadNod) -> None:
    fake.forbid()
    with pytest.raises(ConfigProblem) as caught:
        api_for(fake).stats()
    assert caught.value.status == 403 and caught.value.code == "insufficient_scope"
    assert "Professional or Enterprise" in str(caught.value)


def test_register_webhook_sends_url_events_and_secret(fake: FakeLeadNod) -> None:
    events = ["engagement.created", "opportunity.created"]
    answer = api_for(fake).register_webhook("https://crm.example/webhooks/leadnod", "whsec_1", events)
    assert answer == {"id": "whk_1", "url": "https://crm.example/webhooks/leadnod", "events": events}
    assert fake.webhooks[0]["secret"] == "whsec_1"


def test_a_429_is_waited_out_with_the_same_token() -> None:
    # A short rate window: after a 429 the client also waits for the window's reset, as the headers say.
    fake = new_fake(window=0.3)
    with fake.running():
        api = api_for(fake, reset_margin=0.05)
        fake.throttle_next(2, retry_after="0")
        api.stats()
    assert fake.too_many == 2 and api.client.counters.rate_limited == 2
    assert fake.tokens_issued == 1


def test_the_rate_limit_headers_pace_the_client_without_429s() -> None:
    fake = new_fake(rate_limit=2, window=0.4)
    with fake.running():
        api = api_for(fake, reset_margin=0.05, requests_per_minute=1000)
        for _ in range(3):
            api.stats()
    assert fake.requests["GET /v1/analytics/summary"] == 3
    assert fake.too_many == 0 and fake.tokens_issued == 1


def test_no_credentials_is_a_config_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADNOD_CLIENT_ID", raising=False)
    monkeypatch.delenv("LEADNOD_CLIENT_SECRET", raising=False)
    source = LeadNod("leadnod", SourceConfig(marketplace="leadnod", secrets=["whsec"], api={}))
    with pytest.raises(ConfigProblem, match="LEADNOD_CLIENT_ID and LEADNOD_CLIENT_SECRET"):
        source.api()


def test_credentials_default_to_the_environment(fake: FakeLeadNod, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADNOD_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("LEADNOD_CLIENT_SECRET", fake.client_secret)
    source = LeadNod("leadnod", SourceConfig(marketplace="leadnod", secrets=["whsec"], api={"base_url": fake.url}))
    assert source.api().stats()["escrow_balance"]["currency"] == "USD"


def test_leadnod_has_no_backfill(fake: FakeLeadNod) -> None:
    with pytest.raises(NotImplementedError, match="no list of leads to backfill"):
        api_for(fake).pages({}, None)


@pytest.mark.parametrize("status", [400, 401])
def test_refused_client_credentials_are_a_config_problem_whatever_the_status(status: int) -> None:
    from connector.errors import classify

    for code in ("invalid_client", "unauthorized_client", "invalid_scope"):
        assert isinstance(classify("leadnod", status=status, code=code), ConfigProblem)
