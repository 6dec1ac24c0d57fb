"""The LeadOS API client against a local fake LeadOS over real HTTP: paging both ways, stats, webhooks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connector.config import SourceConfig
from connector.errors import ConfigProblem, Permanent
from connector.sources.leados import LeadOS, LeadOSApi
from fakes.leados_api import FakeLeadOS, make_lead


def api_for(fake: FakeLeadOS, **api: Any) -> LeadOSApi:
    settings = {"base_url": fake.url, "api_key": fake.api_key, "retries": 3, "backoff": 0.01, **api}
    return LeadOS("leados", SourceConfig(marketplace="leados", secrets=["whsec"], api=settings)).api()


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeLeadOS]:
    """A fake with 23 leads; `@pytest.mark.parametrize("fake", [...], indirect=True)` picks the paging."""
    paging = getattr(request, "param", "cursor")
    fake = FakeLeadOS(23, paging=paging, api_key=f"ldo_test_{uuid.uuid4().hex}")  # own rate budget per test
    with fake.running():
        yield fake


def ids(pages: list[Any]) -> list[str]:
    return [lead["id"] for page in pages for lead in page.leads]


@pytest.mark.parametrize("fake", ["cursor"], indirect=True)
def test_cursor_paging_follows_next_cursor_until_it_is_null(fake: FakeLeadOS) -> None:
    pages = list(api_for(fake, page_size=10).pages({}, None))
    assert [len(p.leads) for p in pages] == [10, 10, 3]
    assert ids(pages) == [f"del_{n:05d}" for n in range(23)]
    assert fake.requests["GET /v1/leads"] == 3  # the null cursor ends it: no empty-page request
    assert "cursor" not in fake.queries[0] and all("cursor" in q for q in fake.queries[1:])
    assert all(q["limit"] == "10" for q in fake.queries)
    assert [set(p.resume) for p in pages] == [{"cursor"}, {"cursor"}, {"end"}]


@pytest.mark.parametrize("fake", ["page"], indirect=True)
def test_page_numbers_continue_until_an_empty_page(fake: FakeLeadOS) -> None:
    pages = list(api_for(fake, page_size=10).pages({}, None))
    assert [len(p.leads) for p in pages] == [10, 10, 3]
    assert ids(pages) == [f"del_{n:05d}" for n in range(23)]
    # The answers carry page numbers and no page count, so only an empty page ends the list.
    assert [q.get("page") for q in fake.queries] == [None, "2", "3", "4"]
    assert [p.resume for p in pages] == [{"page": 2}, {"page": 3}, {"page": 4}]
    assert pages[0].total == 23


@pytest.mark.parametrize("fake", ["link"], indirect=True)
def test_next_page_links_are_followed(fake: FakeLeadOS) -> None:
    pages = list(api_for(fake, page_size=10).pages({}, None))
    assert ids(pages) == [f"del_{n:05d}" for n in range(23)]
    assert [q.get("page") for q in fake.queries] == [None, "2", "3"]


@pytest.mark.parametrize("fake", ["cursor", "page", "link"], indirect=True)
def test_resume_continues_after_the_page_it_came_from(fake: FakeLeadOS) -> None:
    api = api_for(fake, page_size=10)
    first = next(iter(api.pages({}, None)))
    rest = list(api_for(fake, page_size=10).pages({}, first.resume))
    assert ids([first, *rest]) == [f"del_{n:05d}" for n in range(23)]
    assert list(api.pages({}, {"end": True})) == []


@pytest.mark.parametrize("paging", ["cursor", "page"])
def test_a_list_that_is_an_exact_number_of_pages(paging: str) -> None:
    fake = FakeLeadOS(20, paging=paging, api_key=f"ldo_test_{uuid.uuid4().hex}")
    with fake.running():
        pages = list(api_for(fake, page_size=10).pages({}, None))
    assert [len(p.leads) for p in pages] == [10, 10]
    assert fake.requests["GET /v1/leads"] == (2 if paging == "cursor" else 3)


@pytest.mark.parametrize("paging", ["cursor", "page"])
def test_an_empty_list_yields_nothing(paging: str) -> None:
    fake = FakeLeadOS(0, paging=paging, api_key=f"ldo_test_{uuid.uuid4().hex}")
    with fake.running():
        assert list(api_for(fake).pages({}, None)) == []
        assert fake.requests["GET /v1/leads"] == 1


@pytest.mark.parametrize("fake", ["ignore"], indirect=True)
def test_a_server_that_ignores_paging_stops_the_backfill_instead_of_looping(fake: FakeLeadOS) -> None:
    with pytest.raises(Permanent) as caught:
        list(api_for(fake, page_size=10).pages({}, None))
    assert caught.value.code == "pagination_loop"
    assert fake.requests["GET /v1/leads"] == 2


@pytest.mark.parametrize("honour", [True, False], ids=["server-filters", "server-ignores-filters"])
def test_filters_are_sent_and_also_applied_to_what_comes_back(honour: bool) -> None:
    fake = FakeLeadOS(23, paging="page", api_key=f"ldo_test_{uuid.uuid4().hex}", honour_filters=honour)
    for n in (5, 9, 20):
        fake.leads[n]["campaign_id"] = "camp_other"
    fake.leads[5]["delivered_at"] = "2026-01-02T23:59:59Z"  # before the date range
    fake.leads[20]["delivered_at"] = "2026-04-25T00:00:00+02:00"  # 22:00 UTC on the 24th: inside
    day = "2026-04-24"
    assert all(fake.leads[n]["delivered_at"].startswith(day) for n in (3, 9))
    with fake.running():
        pages = list(api_for(fake).pages({"campaign_id": "camp_other", "date_from": day, "date_to": day}, None))
    assert ids(pages) == ["del_00009", "del_00020"]
    assert fake.queries[0] == {"campaign_id": "camp_other", "date_from": day, "date_to": day, "limit": "100"}


def test_a_filter_leados_does_not_have_is_refused_before_any_request(fake: FakeLeadOS) -> None:
    with pytest.raises(ConfigProblem, match="cannot filter by vertical"):
        list(api_for(fake).pages({"vertical": "solar", "suburb": None}, None))
    assert sum(fake.requests.values()) == 0


def test_listed_items_without_an_id_take_the_delivery_id(fake: FakeLeadOS) -> None:
    for lead in fake.leads:
        del lead["id"]
    pages = list(api_for(fake).pages({}, None))
    assert ids(pages)[:2] == ["del_00000", "del_00001"]
    event = api_for(fake).detail(pages[0].leads[0])
    assert event is not None and event.lead_id == "del_00000" == event.event_key


def test_detail_is_the_webhook_event_without_another_request(fake: FakeLeadOS) -> None:
    api = api_for(fake)
    listed = next(iter(api.pages({}, None))).leads[0]
    before = sum(fake.requests.values())
    event = api.detail(listed)
    assert sum(fake.requests.values()) == before
    webhook = json.dumps({"event": "lead.delivered", "delivery_id": listed["delivery_id"],
                          "campaign_id": listed["campaign_id"], "lead": make_lead(0)}).encode()
    pushed = api.marketplace.parse(webhook)
    assert event is not None and event.origin == "backfill" and pushed.origin == "webhook"
    assert (event.event_key, event.event_type, event.lead_id, event.occurred_at) == \
        (pushed.event_key, pushed.event_type, pushed.lead_id, pushed.occurred_at) == \
        ("del_00000", "lead.delivered", "del_00000", event.occurred_at)
    assert event.lead == pushed.lead
    assert event.lead["first_name"] == "Raj" and event.lead["last_name"] == "Sharma"


def test_stats_reads_delivery_stats_and_balance(fake: FakeLeadOS) -> None:
    stats = api_for(fake).stats()
    assert stats["balance"] == {"credits_remaining": 480, "credits_used_this_month": 120}
    assert sum(day["delivered"] for day in stats["deliveries"]["days"]) == 23
    assert fake.requests["GET /v1/leads/stats"] == 1 and fake.requests["GET /v1/usage/balance"] == 1


def test_register_webhook_posts_url_secret_and_events(fake: FakeLeadOS) -> None:
    answer = api_for(fake).register_webhook("https://crm.example/webhooks/leados", "whsec_1", ["lead.delivered"])
    assert answer["id"] == "wh_1" and answer["events"] == ["lead.delivered"]
    assert fake.webhooks[0]["secret"] == "whsec_1"


def test_register_webhook_refusal_is_permanent(fake: FakeLeadOS) -> None:
    with pytest.raises(Permanent, match="url must be https"):
        api_for(fake).register_webhook("ftp://crm.example", "whsec_1", ["lead.delivered"])


def test_wrong_api_key_is_a_config_problem_that_names_the_variable(fake: FakeLeadOS) -> None:
    with pytest.raises(ConfigProblem) as caught:
        list(api_for(fake, api_key="ldo_wrong").pages({}, None))
    assert "LEADOS_API_KEY" in str(caught.value) and caught.value.status == 401


def test_missing_api_key_is_a_config_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADOS_API_KEY", raising=False)
    source = LeadOS("leados", SourceConfig(marketplace="leados", secrets=["whsec"], api={}))
    with pytest.raises(ConfigProblem, match="LEADOS_API_KEY"):
        source.api()


def test_api_key_defaults_to_the_environment(fake: FakeLeadOS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADOS_API_KEY", fake.api_key)
    source = LeadOS("leados", SourceConfig(marketplace="leados", secrets=["whsec"], api={"base_url": fake.url}))
    assert source.api().stats()["balance"]["credits_remaining"] == 480


def test_server_errors_are_retried_then_paging_goes_on(fake: FakeLeadOS) -> None:
    fake.fail_next(2, 503)
    api = api_for(fake, page_size=10)
    assert len(ids(list(api.pages({}, None)))) == 23
    assert api.client.counters.retries == 2


def test_a_429_is_waited_out() -> None:
    # A short rate window: after a 429 the client waits for the window's reset, as the headers say.
    fake = FakeLeadOS(23, paging="cursor", api_key=f"ldo_test_{uuid.uuid4().hex}", window=0.3)
    with fake.running():
        fake.fail_next(1, 429, {"Retry-After": "0"})
        api = api_for(fake, page_size=10, reset_margin=0.05)
        assert len(ids(list(api.pages({}, None)))) == 23
    assert api.client.counters.rate_limited == 1
    assert fake.requests["GET /v1/leads"] == 4


def test_the_rate_limit_headers_pace_the_client_without_429s() -> None:
    fake = FakeLeadOS(23, paging="page", api_key=f"ldo_test_{uuid.uuid4().hex}", rate_limit=3, window=0.5)
    with fake.running():
        api = api_for(fake, page_size=5, reset_margin=0.05)
        assert len(ids(list(api.pages({}, None)))) == 23
    assert fake.requests["GET /v1/leads"] == 6
    assert fake.too_many == 0


def test_a_page_size_the_api_refuses_is_permanent(fake: FakeLeadOS) -> None:
    with pytest.raises(Permanent, match="limit must be at most 200"):
        list(api_for(fake, page_size=300).pages({}, None))
