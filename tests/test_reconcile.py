"""Reconcile against the fake Leaditio API, on SQLite and PostgreSQL: it recovers exactly the leads the
marketplace delivered in the window and no webhook brought, a second run finds nothing, a dry run writes
nothing, each run is recorded and a gap is alerted; LeadNod (no lead list) is refused clearly."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.backfill import Backfill, Job
from connector.backfill.reconcile import Gap, Reconcile
from connector.config import Config, load_config
from connector.errors import ConfigError, ConfigProblem
from connector.intake import accept
from connector.metrics import render
from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import deliveries, events, reconcile_runs
from fakes.leaditio_api import FakeLeaditioApi, make_lead, source_config
from tests.conftest import ENV, cli_for, write_config

DAY = datetime(2026, 5, 20, 6, 0, tzinfo=UTC)  # every lead of the fixed-time tests is delivered on this day
NOW = datetime(2026, 5, 21, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


def lead(n: int, start: datetime = DAY, prefix: str = "lead") -> dict[str, Any]:
    """Lead n, delivered at start + 17 min x n, with id prefix_n."""
    return {**make_lead(n, start=start), "id": f"{prefix}_{n:06d}"}


def setup(tmp_path: Path, database_url: str, fake: FakeLeaditioApi, key: str, *, alert_url: str | None = None,
          reconcile: dict[str, Any] | None = None) -> tuple[Path, Config, Runtime]:
    path = write_config(tmp_path, database_url, sources=source_config(
        fake.url, **({"reconcile": reconcile} if reconcile else {})))
    if alert_url:
        path.write_text(path.read_text() + yaml.safe_dump({"alerts": {"urls": ["${ALERT_URL}"]}}))
    env = {**ENV, "LEADITIO_API_KEY": key, **({"ALERT_URL": alert_url} if alert_url else {})}
    config = load_config(path, env=env)
    store = Store(config.database.url)
    store.upgrade()
    return path, config, Runtime(config, store)


def webhook(runtime: Runtime, full: dict[str, Any]) -> None:
    """The lead as its webhook would have brought it, stored the way the receiver stores it."""
    body = json.dumps({"event": "lead.new", "timestamp": full["created_at"],
                       "lead": {k: v for k, v in full.items() if k not in ("phone", "email")},
                       "contact": {"phone": full["phone"], "email": full["email"]}}).encode()
    accept(runtime.config, runtime.store, runtime.marketplaces["leaditio"].parse(body), body)


def reconcile(runtime: Runtime, *, window: float = 48 * 3600, now: float | None = NOW, **kw: Any) -> Gap:
    api = runtime.marketplaces["leaditio"].api()
    try:
        return Reconcile(runtime, "leaditio", api, window=window, now=now, **kw).reconcile()
    finally:
        api.close()


def table_counts(store: Store) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0
                     for t in (events, deliveries, reconcile_runs))  # type: ignore[return-value]


def test_recovers_exactly_the_leads_no_webhook_brought_and_a_second_run_finds_nothing(tmp_path, database_url, key):
    leads = [lead(n) for n in range(40)]  # 06:00 to 17:03 on 2026-05-20
    lost = {"lead_000004", "lead_000017", "lead_000031"}
    with FakeLeaditioApi(leads, keys={key: True}, rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp_path, database_url, fake, key)
        for item in leads:
            if item["id"] not in lost:
                webhook(runtime, item)
        gap = reconcile(runtime)
        assert gap.ok and set(gap.missing) == lost and gap.listed == 40 and gap.recovered == 3
        assert gap.summary() == "3 leads delivered on 2026-05-20 never reached us by webhook: recovered"
        assert fake.requests["detail"] == 3 and fake.requests["list"] == 1  # details only of the missing
        stored = runtime.store.known_leads("leaditio", sorted(lost))
        assert set(stored) == lost and stored["lead_000004"]["phone"] == leads[4]["phone"]
        with runtime.store.engine.connect() as conn:
            origins = dict(conn.execute(sa.select(events.c.lead_id, events.c.origin)).all())
        assert {lid for lid, origin in origins.items() if origin == "reconcile"} == lost
        assert table_counts(runtime.store)[:2] == (40, 40)  # one delivery per lead, to the routed file

        again = reconcile(runtime)
        assert again.ok and not again.missing and again.recovered == 0 and again.listed == 40
        assert again.summary().startswith("all 40 leads leaditio delivered between 2026-05-19 12:00 UTC")
        assert fake.requests["detail"] == 3  # nothing fetched the second time
        assert table_counts(runtime.store) == (40, 40, 2)
        runs = runtime.store.reconcile_runs("leaditio")
        assert [(r["missing"], r["recovered"], r["state"]) for r in runs] == [(0, 0, "ok"), (3, 3, "ok")]
        assert runs[1]["missing_ids"] == sorted(lost) and runs[1]["trigger"] == "command"
        assert runtime.store.latest_reconcile_runs()["leaditio"]["id"] == runs[0]["id"]


def test_the_window_leaves_out_older_leads_and_those_still_in_their_grace(tmp_path, database_url, key):
    """48 h back from NOW; leads younger than the grace may still be on their way by webhook."""
    old = [lead(n, start=datetime(2026, 5, 19, 11, 0, tzinfo=UTC), prefix="old") for n in range(3)]  # 11:00-11:34
    recent = [lead(n, start=datetime(2026, 5, 21, 11, 50, tzinfo=UTC), prefix="new") for n in range(2)]  # 11:50, 12:07
    with FakeLeaditioApi(old + recent + [lead(0)], keys={key: True}, rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp_path, database_url, fake, key)
        gap = reconcile(runtime, grace=300)  # the window: 2026-05-19 12:00 to 2026-05-21 11:55
        assert set(gap.missing) == {"lead_000000", "new_000000"} and gap.listed == 2


def test_a_dry_run_writes_nothing(tmp_path, database_url, key):
    leads = [lead(n) for n in range(10)]
    with FakeLeaditioApi(leads, keys={key: True}, rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp_path, database_url, fake, key)
        for item in leads[:7]:
            webhook(runtime, item)
        before = table_counts(runtime.store)
        gap = reconcile(runtime, dry_run=True)
        assert set(gap.missing) == {"lead_000007", "lead_000008", "lead_000009"} and gap.recovered == 0
        assert gap.summary().endswith(": not recovered (dry run; run without --dry-run to recover them)")
        assert table_counts(runtime.store) == before == (7, 7, 0)
        assert runtime.store.known_leads("leaditio", sorted(gap.missing)) == {}


pool = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30)  # per lead: (in the window, received)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leads=pool)
def test_recovered_is_always_delivered_minus_received(tmp_path_factory, database_url, key, leads):
    """Whatever leads the marketplace delivered and whichever of them arrived: a run recovers exactly the
    delivered ones (in the window) that did not, and a second run finds nothing."""
    tmp = tmp_path_factory.mktemp("run")
    prefix = f"p{uuid.uuid4().hex[:6]}"  # each example its own leads, in the one database of this test
    inside, outside = DAY, datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    made = [(lead(n, inside if in_window else outside, prefix), in_window, received)
            for n, (in_window, received) in enumerate(leads)]
    with FakeLeaditioApi([m for m, _, _ in made], keys={key: True}, rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp, database_url, fake, key)
        for item, _, received in made:
            if received:
                webhook(runtime, item)
        gap = reconcile(runtime)
        expected = {m["id"] for m, in_window, received in made if in_window and not received}
        assert set(gap.missing) == expected and gap.recovered == len(expected)
        assert gap.listed == sum(1 for _, in_window, _ in made if in_window)
        assert fake.requests["detail"] == len(expected)
        assert set(runtime.store.known_leads("leaditio", [m["id"] for m, _, _ in made])) == \
            {m["id"] for m, in_window, received in made if in_window or received}
        assert not reconcile(runtime).missing
        runtime.store.dispose()


def test_the_command_prints_the_gap_records_it_and_exits_0(tmp_path, database_url, key):
    start = datetime.now(UTC) - timedelta(hours=5)
    leads = [lead(n, start=start) for n in range(6)]  # the last 5 hours, the newest 3.6 h ago
    with FakeLeaditioApi(leads, keys={key: True}, rate_limit=5000, window=1) as fake:
        path, _, runtime = setup(tmp_path, database_url, fake, key)
        webhook(runtime, leads[0])
        cli = env_cli = cli_for_key(path, key)
        out = env_cli("reconcile", "--source", "leaditio", "--dry-run")
        assert "5 leads delivered on" in out and "not recovered (dry run" in out
        data = json.loads(env_cli("reconcile", "--source", "leaditio", "--since", "24h", "--json"))
        assert data["missing"] == 5 and data["recovered"] == 5 and data["listed"] == 6 and data["ok"]
        assert data["missing_ids"] == [f"lead_{n:06d}" for n in range(1, 6)]
        out = env_cli("reconcile", "--source", "leaditio")
        assert "all 6 leads leaditio delivered between" in out and "reached us by webhook" in out
        status = cli("status")
        assert "reconcile leaditio (not scheduled): last run" in status and "all 6 leads" in status
        assert json.loads(cli("status", "--json"))["reconcile"]["leaditio"]["missing"] == 0
        assert len(runtime.store.reconcile_runs()) == 2  # the dry run is not recorded
        env_cli("reconcile", "--source", "leaditio", "--since", "soon", code=2)


def cli_for_key(path: Path, key: str) -> Any:
    from click.testing import CliRunner

    from connector.cli import main

    runner = CliRunner(env={**ENV, "LEADITIO_API_KEY": key, "COLUMNS": "250"})

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return cli


def test_a_failed_run_is_recorded_as_failed_and_the_command_exits_1(tmp_path, database_url, key):
    with FakeLeaditioApi([lead(n, start=datetime.now(UTC) - timedelta(hours=3)) for n in range(3)],
                         keys={key: True}, rate_limit=5000, window=1) as fake:
        path, _, runtime = setup(tmp_path, database_url, fake, key)
        fake.fail_after(0)  # every request answers 500
        out = cli_for_key(path, key)("reconcile", "--source", "leaditio", code=1)
        assert "stopped:" in out and "HTTP 500" in out
        (run,) = runtime.store.reconcile_runs()
        assert run["state"] == "failed" and "HTTP 500" in run["error"] and run["finished_at"]


def test_a_marketplace_without_a_lead_list_is_refused_clearly(tmp_path, database_url):
    sources = {"nod": {"marketplace": "leadnod", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]}}
    path = write_config(tmp_path, database_url, sources=sources, routes=[])
    out = cli_for(path)("reconcile", "--source", "nod", code=2)
    assert "the leadnod API has no list of delivered leads to reconcile with" in " ".join(out.split())
    config = load_config(path, env=ENV)
    with pytest.raises(ConfigProblem, match="no list of delivered leads"):
        Reconcile(Runtime(config), "nod", None, window=3600)  # type: ignore[arg-type]
    sources["nod"]["reconcile"] = {"every": "15m"}
    path = write_config(tmp_path, database_url, sources=sources, routes=[])
    with pytest.raises(ConfigError, match=r"config.yaml:\d+.*sources.nod.reconcile.*remove reconcile"):
        Runtime(load_config(path, env=ENV))


def test_a_gap_is_alerted_once_per_run_and_counted(tmp_path, database_url, key, sink):
    leads = [lead(n) for n in range(5)]
    with FakeLeaditioApi(leads, keys={key: True}, rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp_path, database_url, fake, key, alert_url=sink.url)
        webhook(runtime, leads[0])
        reconcile(runtime)
        assert sink.titles() == ["4 leads from leaditio never arrived by webhook"]
        body = sink.bodies[0]["message"]
        assert "4 leads delivered on 2026-05-20 never reached us by webhook: recovered" in body
        assert "connector reconcile --source leaditio --dry-run" in body
        assert "connector explain lead_000001 --source leaditio" in body
        assert "+2782" not in body and "@example.com" not in body  # no personal data in an alert
        reconcile(runtime)  # nothing missing: nothing to say
        assert len(sink.bodies) == 1
        metrics = render(runtime.store).decode()  # from the runs table: any process's runs count
        assert 'connector_reconcile_recovered_total{source="leaditio"} 4.0' in metrics
        assert 'connector_reconcile_last_missing{source="leaditio"} 0.0' in metrics


def test_a_finished_backfill_is_alerted_once(tmp_path, database_url, key, sink):
    with FakeLeaditioApi([lead(n) for n in range(5)], keys={key: True}, rate_limit=5000, window=1) as fake:
        _, config, runtime = setup(tmp_path, database_url, fake, key, alert_url=sink.url)
        api = runtime.marketplaces["leaditio"].api()
        try:
            result = Backfill(runtime, Job("leaditio"), api).run()
            Backfill(runtime, Job("leaditio"), api, dry_run=True).run()  # a dry run writes and says nothing
        finally:
            api.close()
        assert result.done and sink.titles() == ["Backfill of leaditio finished"]
        assert "5 listed, 5 fetched, 0 already present, 5 enqueued (5 deliveries)" in sink.bodies[0]["message"]
        assert "connector status" in sink.bodies[0]["message"]


def test_timeless_now_defaults_to_the_clock(tmp_path, database_url, key):
    """Without `now`, the window ends now (less the grace): a lead delivered a minute ago is left alone."""
    with FakeLeaditioApi([lead(0, start=datetime.now(UTC) - timedelta(minutes=1))], keys={key: True},
                         rate_limit=5000, window=1) as fake:
        _, _, runtime = setup(tmp_path, database_url, fake, key)
        assert reconcile(runtime, now=None, grace=120).listed == 0
        assert set(reconcile(runtime, now=None, grace=0).missing) == {"lead_000000"}
        assert time.time() - runtime.store.reconcile_runs()[0]["window_to"] < 60


def test_leados_lists_whole_leads_so_a_gap_costs_no_detail_call(tmp_path, database_url):
    from fakes.leados_api import FakeLeadOS

    fake = FakeLeadOS(12, paging="cursor", api_key=f"ldo_test_{uuid.uuid4().hex}")
    with fake.running():
        sources = {"leados": {"marketplace": "leados", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"],
                              "api": {"base_url": fake.url, "api_key": "${LEADOS_API_KEY}", "retries": 2, "backoff": 0.01}}}
        path = write_config(tmp_path, database_url, sources=sources, routes=[{"source": "leados",
                                                                             "destination": "leads_file"}])
        config = load_config(path, env={**ENV, "LEADOS_API_KEY": fake.api_key})
        store = Store(config.database.url)
        store.upgrade()
        runtime = Runtime(config, store)
        for item in fake.leads[:9]:
            body = json.dumps({"event": "lead.delivered", "delivery_id": item["delivery_id"],
                               "campaign_id": item["campaign_id"], "lead": item}).encode()
            accept(config, store, runtime.marketplaces["leados"].parse(body), body)
        now = 1_777_000_000 + 600 * 11 + 86400  # a day after the last delivery
        api = runtime.marketplaces["leados"].api()
        try:
            gap = Reconcile(runtime, "leados", api, window=3 * 86400, now=now).reconcile()
            again = Reconcile(runtime, "leados", api, window=3 * 86400, now=now).reconcile()
        finally:
            api.close()
        assert set(gap.missing) == {"del_00009", "del_00010", "del_00011"} and gap.recovered == 3
        assert gap.listed == 12 and gap.requests == 1 and dict(fake.requests).get("detail", 0) == 0
        assert not again.missing and table_counts(store)[:2] == (12, 12)
