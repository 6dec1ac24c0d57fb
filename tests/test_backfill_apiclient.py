"""connector.apiclient and the Leaditio client against the fake Leaditio API over real HTTP:
pacing by X-RateLimit-* headers, 429 with Retry-After (seconds and HTTP date), retries, error bodies."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

from connector.apiclient import RATE, ApiClient, RetryPolicy, feed_rate_headers, marketplace_budget
from connector.errors import ConfigProblem, Permanent, RateLimited, Retryable
from connector.pacing import Budget, Window, local_budgets
from connector.sources.leaditio import ApiSettings, LeaditioApi
from fakes.leaditio_api import FakeLeaditioApi, make_lead

FAST = RetryPolicy(attempts=3, base=0.001, cap=0.01)


def new_key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


def rate_budget(per_window: int = 1000, window: float = 1.0, margin: float = 0.01, scope: str = "") -> Budget:
    """A budget of its own (a fresh key each time): `per_window` requests in `window` seconds."""
    return local_budgets().budget("leaditio", new_key(), [Window(RATE, per_window, window)], reset_margin=margin,
                                  scope=scope)


def client_for(fake: FakeLeaditioApi, key: str, budget: Budget | None = None, **kw) -> ApiClient:  # noqa: ANN003
    budget = budget or rate_budget()
    return ApiClient("leaditio", fake.url, headers={"Authorization": f"Bearer {key}"}, budget=budget,
                     timeout=5, retry=kw.pop("retry", FAST), **kw)


def leaditio(fake: FakeLeaditioApi, key: str, **settings) -> LeaditioApi:  # noqa: ANN003
    return LeaditioApi("leaditio", ApiSettings(base_url=fake.url, backoff=0.001, retries=3, reset_margin=0.01,
                                               **settings), key, local_budgets())


def test_requests_follow_the_rate_limit_headers_without_a_single_429():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}, rate_limit=8, window=1) as fake:
        client = client_for(fake, key, rate_budget(1000, window=1.0))  # we think: 1000/s
        started = time.time()
        for _ in range(20):
            assert client.get("/account/stats")["active_plan"] == "pro"
        elapsed = time.time() - started
    assert fake.rate_limited == 0 and client.counters.rate_limited == 0
    assert client.budget.limit(RATE) == 8  # the server's limit won
    assert elapsed >= 1.0  # 20 requests at 8 a window need at least two window changes


def test_one_budget_per_key_is_shared_by_every_client_in_the_process():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}, rate_limit=10, window=1) as fake:
        budgets = local_budgets()
        budget_a = marketplace_budget(budgets, "leaditio", key, requests_per_minute=600, reset_margin=0.01,
                                      scope=fake.url)
        budget_b = marketplace_budget(budgets, "leaditio", key, requests_per_minute=600, reset_margin=0.01,
                                      scope=fake.url)
        assert budget_a.key == budget_b.key and key not in budget_a.key  # one row per key, the key hashed
        other = marketplace_budget(budgets, "leaditio", key, requests_per_minute=600, scope="elsewhere")
        assert other.key != budget_a.key
        clients = [client_for(fake, key, budget_a), client_for(fake, key, budget_b)]

        def hammer(client: ApiClient) -> None:
            for _ in range(12):
                client.get("/account/stats")

        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert fake.rate_limited == 0
    assert sum(c.counters.requests for c in clients) == 24


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_a_429_waits_for_retry_after_then_succeeds(as_date):
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}, rate_limit=3, window=1,
                         retry_after_as_date=as_date) as fake:
        # Another process on the same key spends the window behind our back.
        other = client_for(fake, key, rate_budget(1000, window=1.0, margin=0.5))
        ours = client_for(fake, key, rate_budget(1000, window=1.0))
        for _ in range(3):
            other.get("/account/stats")
        started = time.time()
        assert ours.get("/account/stats")["active_plan"] == "pro"
        waited = time.time() - started
    assert ours.counters.rate_limited >= 1 and fake.rate_limited >= 1
    assert 0.0 < waited < 2.5


def test_rate_limited_for_too_long_raises_rate_limited():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}, rate_limit=1, window=1) as fake:
        client_for(fake, key, rate_budget(1000, window=60)).get("/account/stats")
        ours = client_for(fake, key, retry=RetryPolicy(attempts=3, base=0.001, max_rate_limited=1))
        with pytest.raises(RateLimited) as caught:
            ours.get("/account/stats")
    assert caught.value.status == 429 and caught.value.code == "rate_limited"


def test_server_errors_are_retried_with_backoff():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        client = client_for(fake, key)
        fake.fail_next(2, 500)
        assert client.get("/leads/lead_000001")["id"] == "lead_000001"
    assert client.counters.retries == 2 and client.counters.requests == 3


def test_server_errors_that_last_end_in_a_retryable_error_with_the_servers_words():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        api = leaditio(fake, key)
        fake.fail_after(0)
        with pytest.raises(Retryable) as caught:
            api.stats()
    assert caught.value.status == 500 and caught.value.code == "internal_error"
    assert "retry with backoff" in str(caught.value) and "run the same command again" in str(caught.value)
    assert api.client.counters.requests == 3  # the policy's attempts, then give up


def test_network_errors_are_retried_then_reported_as_unreachable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ApiClient("leaditio", f"http://127.0.0.1:{port}/api/v1", headers={}, budget=rate_budget(600, window=60),
                       timeout=1, retry=FAST)
    with pytest.raises(Retryable) as caught:
        client.get("/leads", params={"suburb": "Sandton"})
    assert caught.value.code == "network" and "unreachable" in str(caught.value)
    assert "Sandton" not in str(caught.value)  # query strings stay out of messages
    assert client.counters.retries == 2


def test_401_tells_the_operator_to_check_the_api_key():
    with FakeLeaditioApi([make_lead(1)], keys={"right": True}) as fake:
        api = leaditio(fake, "wrong")
        with pytest.raises(ConfigProblem) as caught:
            api.stats()
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    assert "LEADITIO_API_KEY" in str(caught.value) and "Invalid or missing API key" in str(caught.value)
    assert api.client.counters.requests == 1  # never retried


def test_403_says_the_plan_has_no_api_access():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: False}) as fake:
        api = leaditio(fake, key)
        with pytest.raises(ConfigProblem) as caught:
            list(api.pages({}, None))
    assert caught.value.status == 403 and caught.value.code == "forbidden"
    assert "plan does not include API access" in str(caught.value)


def test_404_is_none_for_detail_and_permanent_otherwise():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        api = leaditio(fake, key)
        assert api.detail({"id": "lead_gone"}) is None
        with pytest.raises(Permanent) as caught:
            api.client.get("/leads/lead_gone")
    assert caught.value.status == 404 and caught.value.code == "not_found"


def test_limit_over_100_is_rejected_as_invalid_request():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        client = client_for(fake, key)
        with pytest.raises(Permanent) as caught:
            client.get("/leads", params={"limit": 101})
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    with pytest.raises(ValueError):
        ApiSettings(page_size=101)  # our own setting cannot ask for it


def test_post_is_not_retried_on_a_server_error():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        api = leaditio(fake, key)
        fake.fail_next(1, 500)
        with pytest.raises(Retryable):
            api.register_webhook("https://example.com/webhooks/leaditio", "s3cret", ["lead.new"])
        assert fake.webhooks == [] and api.client.counters.retries == 0
        answer = api.register_webhook("https://example.com/webhooks/leaditio", "s3cret", ["lead.new"])
    assert answer["webhook_id"].startswith("wh_") and fake.webhooks[0]["secret"] == "s3cret"


def test_budget_waits_for_the_reported_reset_when_nothing_is_left():
    budget = rate_budget(1000, window=60, margin=0.0)
    budget.acquire()
    feed_rate_headers(budget, {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0",
                               "X-RateLimit-Reset": str(time.time() + 0.3)})
    started = time.time()
    budget.acquire()  # must wait for the reset, not go by our own 1000/min
    assert time.time() - started >= 0.25
    assert budget.rate(RATE) == 1.0  # 60 a minute, from the headers


def test_budget_without_headers_keeps_to_its_own_rate():
    budget = rate_budget(5, window=0.4, margin=0.0)
    started = time.time()
    for _ in range(11):
        budget.acquire()
    assert time.time() - started >= 0.75  # 11 requests at 5 per 0.4 s: two full waits


def test_leaditio_filters_are_checked_before_any_request():
    key = new_key()
    with FakeLeaditioApi([make_lead(1)], keys={key: True}) as fake:
        api = leaditio(fake, key)
        with pytest.raises(ConfigProblem, match="vertical must be one of"):
            list(api.pages({"vertical": "solr"}, None))
        with pytest.raises(ConfigProblem, match="cannot filter by colour"):
            list(api.pages({"colour": "red"}, None))
    assert sum(fake.requests.values()) == 0
