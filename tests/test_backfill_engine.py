"""The backfill engine against the fake Leaditio API, on SQLite and PostgreSQL: pagination, re-runs,
resume after a crash or Ctrl-C, a list that moves, leads that vanish, dry runs, routing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.backfill import Backfill, Job, Progress, Result
from connector.config import Config, load_config
from connector.intake import accept
from connector.pacing import local_budgets
from connector.runtime import Runtime
from connector.sources.leaditio import LISTED_FIELDS, ApiSettings, LeaditioApi
from connector.store import Store
from connector.store.schema import deliveries, events
from connector.worker import Worker
from fakes.leaditio_api import FakeLeaditioApi, make_lead, source_config
from tests.conftest import ENV, read_jsonl, write_config


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake(key: str) -> Any:
    with FakeLeaditioApi([make_lead(n) for n in range(250)], keys={key: True}, rate_limit=5000, window=1) as api:
        yield api


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Tests about the API conversation run on SQLite only; those about storing run on both databases."""
    return f"sqlite:///{tmp_path / 'connector.db'}"


def setup(tmp_path: Path, database_url: str, fake: FakeLeaditioApi, key: str, **kw: Any) -> tuple[Config, Store]:
    path = write_config(tmp_path, database_url, sources=source_config(fake.url), **kw)
    config = load_config(path, env={**ENV, "LEADITIO_API_KEY": key})
    store = Store(config.database.url)
    store.upgrade()
    return config, store


def run(config: Config, store: Store, job: Job | None = None, *, restart: bool = False, **kw: Any) -> Result:
    api = Runtime(config).marketplaces["leaditio"].api()
    try:
        return Backfill(Runtime(config, store), job or Job("leaditio"), api, **kw).run(restart=restart)
    finally:
        api.close()


def stored_events(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(events.c.lead_id, events.c.event_type,
                                                                 events.c.origin, events.c.lead_json))]


def delivery_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() or 0


def test_first_run_queues_every_lead_once_and_a_rerun_costs_only_list_calls(tmp_path, database_url, fake, key):
    config, store = setup(tmp_path, database_url, fake, key)
    first = run(config, store)
    assert first.done and first.ok and first.error is None
    assert (first.counts.listed, first.counts.fetched, first.counts.enqueued, first.counts.deliveries) == \
        (250, 250, 250, 250)
    assert fake.requests == {"list": 3, "detail": 250, "webhook": 0, "stats": 0}
    assert first.requests == 253 and first.rate_limited == 0
    rows = stored_events(store)
    assert len(rows) == 250 and len({r["lead_id"] for r in rows}) == 250
    assert {(r["event_type"], r["origin"]) for r in rows} == {("lead.new", "backfill")}

    again = run(config, store)
    assert again.done and again.ok
    assert (again.counts.already_present, again.counts.fetched, again.counts.enqueued) == (250, 0, 0)
    assert fake.requests["detail"] == 250 and fake.requests["list"] == 6  # the re-run: 3 list calls, 0 details
    assert len(stored_events(store)) == 250 and delivery_count(store) == 250


def test_backfilled_leads_reach_the_destination_like_webhook_leads(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    run(config, store)
    Worker(Runtime(config, store)).drain(timeout=30)
    rows = read_jsonl(tmp_path / "leads.jsonl")
    assert len(rows) == 250
    lead = make_lead(7)
    row = rows["leaditio:lead_000007"]
    assert (row["phone"], row["email"], row["score"]) == (lead["phone"], lead["email"], lead["score"])
    assert row["event"] == "lead.new" and row["source"] == "leaditio"


def test_api_detail_and_webhook_give_the_same_lead_document(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    full = make_lead(3)
    webhook_body = {"event": "lead.new", "timestamp": full["delivered_at"],
                    "lead": {k: v for k, v in full.items() if k not in ("phone", "email")},
                    "contact": {"phone": full["phone"], "email": full["email"]}}
    from_webhook = Runtime(config).marketplaces["leaditio"].parse(json.dumps(webhook_body).encode())
    api = Runtime(config).marketplaces["leaditio"].api()
    from_api = api.detail({"id": full["id"]})
    assert from_api is not None and from_api.lead == from_webhook.lead
    assert from_api.occurred_at == from_webhook.occurred_at  # both dated by delivered_at


def test_leads_already_received_by_webhook_cost_no_detail_call(tmp_path, database_url, fake, key):
    config, store = setup(tmp_path, database_url, fake, key)
    for n in (10, 11, 12):
        full = make_lead(n)
        body = {"event": "lead.new", "timestamp": full["delivered_at"],
                "lead": {k: v for k, v in full.items() if k not in ("phone", "email")},
                "contact": {"phone": full["phone"], "email": full["email"]}}
        raw = json.dumps(body).encode()
        accept(config, store, Runtime(config).marketplaces["leaditio"].parse(raw), raw)
    result = run(config, store)
    assert result.counts.fetched == 247 and result.counts.already_present == 3
    assert fake.requests["detail"] == 247
    assert delivery_count(store) == 250  # no second delivery for the three


@pytest.mark.parametrize("count,pages", [(0, 1), (99, 1), (100, 1), (200, 2), (201, 3)])
def test_pagination_edges(tmp_path, sqlite_url, key, count, pages):
    with FakeLeaditioApi([make_lead(n) for n in range(count)], keys={key: True}, rate_limit=5000, window=1) as api:
        config, store = setup(tmp_path, sqlite_url, api, key)
        result = run(config, store)
        assert result.done and result.ok
        assert result.counts.listed == count and result.counts.enqueued == count
        assert api.requests["list"] == pages  # an exact multiple of 100 needs no empty extra page


def test_filters_reach_the_api(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    result = run(config, store, Job("leaditio", {"vertical": "solar", "score_tier": "hot", "suburb": "sandton",
                                                 "date_from": "2026-01-01", "date_to": "2026-01-02"}))
    expected = [make_lead(n) for n in range(250)]
    expected = [lead for lead in expected if lead["vertical"] == "solar" and lead["score_tier"] == "hot"
                and lead["suburb"] == "Sandton" and lead["delivered_at"][:10] <= "2026-01-02"]
    assert expected and result.counts.listed == len(expected)
    assert {r["lead_id"] for r in stored_events(store)} == {lead["id"] for lead in expected}


def test_a_lead_deleted_between_list_and_detail_is_counted_and_skipped(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)

    def delete_one(api: FakeLeaditioApi, listed: list[dict[str, Any]]) -> None:
        if listed and listed[0]["id"] == "lead_000249":
            api.delete("lead_000200")

    fake.on_list = delete_one
    result = run(config, store)
    assert result.done and result.ok
    assert (result.counts.gone, result.counts.skipped, result.counts.enqueued) == (1, 1, 249)
    assert "lead_000200" not in {r["lead_id"] for r in stored_events(store)}


def test_a_crash_mid_run_resumes_at_the_last_saved_page_without_duplicates(tmp_path, database_url, fake, key):
    config, store = setup(tmp_path, database_url, fake, key)
    fake.fail_after(150)  # page 1 (101 requests) is saved; page 2 dies half way
    broken = run(config, store)
    assert not broken.done and broken.error and "internal_error" in broken.error
    assert len(stored_events(store)) == 100
    saved = store.checkpoint("leaditio", Job("leaditio").key)
    assert saved is not None and not saved["done"] and saved["state"]["resume"] == {"page": 2}

    fake.fail_after(None)
    resumed = run(config, store)
    assert resumed.resumed and resumed.done and resumed.ok
    rows = stored_events(store)
    assert len(rows) == 250 and len({r["lead_id"] for r in rows}) == 250  # nothing twice, nothing missed
    assert delivery_count(store) == 250
    assert resumed.counts.enqueued == 250 and resumed.counts.listed == 250  # counts cover the whole job
    assert fake.requests["list"] == 2 + 2  # first run: pages 1, 2; resumed: pages 2, 3


def test_ctrl_c_then_resume(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)

    def interrupt(step: Progress) -> None:
        if step.done >= 130:
            raise KeyboardInterrupt

    api = Runtime(config).marketplaces["leaditio"].api()
    with pytest.raises(KeyboardInterrupt):
        Backfill(Runtime(config, store), Job("leaditio"), api, on_progress=interrupt).run()
    assert len(stored_events(store)) == 100
    resumed = run(config, store)
    assert resumed.resumed and resumed.done
    assert len({r["lead_id"] for r in stored_events(store)}) == 250 == len(stored_events(store))


def test_restart_ignores_the_checkpoint(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    run(config, store, limit=120)
    fresh = run(config, store, restart=True)
    assert not fresh.resumed and fresh.done
    assert fresh.counts.listed == 250 and fresh.counts.already_present == 120 and fresh.counts.fetched == 130


def test_limit_stops_mid_page_and_the_next_run_goes_on(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    first = run(config, store, limit=30)
    assert not first.done and first.counts.listed == 30 and fake.requests["detail"] == 30
    second = run(config, store, limit=100)
    assert second.resumed and not second.done and second.counts.listed == 130
    third = run(config, store)
    assert third.done and third.counts.listed == 250 and third.counts.enqueued == 250
    assert fake.requests["detail"] == 250
    assert len(stored_events(store)) == 250


def test_a_list_that_shrinks_mid_run_gets_a_second_pass(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    calls = {"n": 0}

    def delete_newest(api: FakeLeaditioApi, listed: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # after page 1 is listed, ten of its leads disappear: later leads shift up
            for lead in listed[:10]:
                api.delete(lead["id"])

    fake.on_list = delete_newest
    result = run(config, store)
    assert result.done and result.ok and result.passes == 2
    stored = {r["lead_id"] for r in stored_events(store)}
    assert stored == set(fake.leads)  # every lead still there, including the ten that shifted pages
    assert result.counts.gone == 10 and result.counts.rechecked == 240


def test_a_page_that_repeats_is_not_looped_on(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    fake.ignore_page = True
    result = run(config, store)
    assert result.done and not result.ok
    assert any("repeated a page" in w for w in result.warnings)
    assert fake.requests["list"] <= 2 * 3  # bounded, whatever the passes


def test_a_changed_lead_is_fetched_again_as_an_update(tmp_path, database_url, fake, key):
    config, store = setup(tmp_path, database_url, fake, key)
    run(config, store)
    changed = dict(fake.leads["lead_000001"], score=99, score_tier="hot")
    assert changed["score_tier"] != make_lead(1)["score_tier"]
    fake.add(changed)
    result = run(config, store)
    assert (result.counts.fetched, result.counts.enqueued) == (1, 1)
    updates = [r for r in stored_events(store) if r["event_type"] == "lead.updated"]
    assert [r["lead_id"] for r in updates] == ["lead_000001"]
    assert json.loads(updates[0]["lead_json"])["score"] == 99
    Worker(Runtime(config, store)).drain(timeout=30)
    assert read_jsonl(tmp_path / "leads.jsonl")["leaditio:lead_000001"]["score"] == 99


def test_needs_detail_compares_listed_fields_and_delivery_time(fake, key):
    client = LeaditioApi("leaditio", ApiSettings(base_url=fake.url), key, local_budgets())
    stored = make_lead(5)
    listed = {k: stored[k] for k in ("id", *LISTED_FIELDS, "delivered_at")}
    assert client.needs_detail(listed, None)
    assert not client.needs_detail(listed, stored)
    assert client.needs_detail({**listed, "score_tier": "hot" if stored["score_tier"] != "hot" else "warm"}, stored)
    assert client.needs_detail({**listed, "delivered_at": "2027-01-01T00:00:00Z"}, stored)
    assert not client.needs_detail({**listed, "delivered_at": "2020-01-01T00:00:00Z", "suburb": "X"}, stored)


def test_dry_run_writes_nothing_and_shows_masked_samples(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    result = run(config, store, dry_run=True, limit=20)
    assert result.dry_run and result.counts.fetched == 20 and result.counts.enqueued == 20
    assert stored_events(store) == [] and store.checkpoint("leaditio", Job("leaditio").key) is None
    assert result.samples and result.samples[0].destination == "leads_file"
    values = result.samples[0].values or {}
    assert values["lead_id"].startswith("lead_") and values["email"] == "[email]" and values["phone"] == "[phone]"


def test_destination_option_and_destinations_that_never_had_the_lead(tmp_path, database_url, fake, key):
    destinations = {"a": {"type": "file", "path": str(tmp_path / "a.jsonl"), "mapping": "mappings/file.yaml"},
                    "b": {"type": "file", "path": str(tmp_path / "b.jsonl"), "mapping": "mappings/file.yaml"},
                    "c": {"type": "file", "path": str(tmp_path / "c.jsonl"), "mapping": "mappings/file.yaml"}}
    routes = [{"source": "leaditio", "destination": "a"},
              {"source": "leaditio", "destination": "b", "where": {"vertical": "solar"}}]
    config, store = setup(tmp_path, database_url, fake, key, destinations=destinations, routes=routes)
    only_a = run(config, store, Job("leaditio", destinations=["a"]))
    assert only_a.counts.deliveries == 250
    # Now the routes' default: b never had its solar leads; they are queued from the stored copy.
    routed = run(config, store)
    solar = sum(1 for n in range(250) if make_lead(n)["vertical"] == "solar")
    assert (routed.counts.fetched, routed.counts.enqueued, routed.counts.deliveries) == (0, solar, solar)
    assert routed.counts.already_present == 250 - solar
    # c has no route: naming it sends it every lead.
    to_c = run(config, store, Job("leaditio", destinations=["c"]))
    assert to_c.counts.deliveries == 250 and to_c.counts.fetched == 0
    assert run(config, store).counts.enqueued == 0  # and nothing is left to do
    Worker(Runtime(config, store)).drain(timeout=30)
    assert len(read_jsonl(tmp_path / "b.jsonl")) == solar and len(read_jsonl(tmp_path / "c.jsonl")) == 250


def test_leads_no_route_takes_are_recorded_once_and_not_fetched_again(tmp_path, sqlite_url, fake, key):
    routes = [{"source": "leaditio", "destination": "leads_file", "where": {"score_tier": "hot"}}]
    config, store = setup(tmp_path, sqlite_url, fake, key, routes=routes)
    first = run(config, store)
    hot = sum(1 for n in range(250) if make_lead(n)["score_tier"] == "hot")
    assert first.counts.deliveries == hot and first.counts.unrouted == 250 - hot
    second = run(config, store)
    assert second.counts.fetched == 0 and second.counts.enqueued == 0


def test_a_lead_the_api_refuses_is_counted_as_failed_and_the_run_goes_on(tmp_path, sqlite_url, fake, key):
    config, store = setup(tmp_path, sqlite_url, fake, key)
    api = Runtime(config).marketplaces["leaditio"].api()
    fake.on_list = lambda f, listed: f.fail_next(1, 400) if listed and listed[0]["id"] == "lead_000249" else None
    result = Backfill(Runtime(config, store), Job("leaditio"), api, concurrency=1).run()
    assert result.done and not result.ok
    assert result.counts.failed == 1 and result.counts.enqueued == 249 and result.failed_ids == ["lead_000249"]
