"""`connector backfill`, `connector webhooks register` and `connector stats` through click's CliRunner
(and one real process killed mid-run), against the fake Leaditio API, with a config in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from connector.backfill import Job
from connector.cli import main
from connector.store import Store
from connector.store.schema import events
from fakes.leaditio_api import FakeLeaditioApi, make_lead, source_config
from tests.conftest import ENV, ROOT, wait_for, write_config


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake(key: str) -> Any:
    with FakeLeaditioApi([make_lead(n) for n in range(150)], keys={key: True}, rate_limit=5000, window=1) as api:
        yield api


def config_file(tmp_path: Path, fake: FakeLeaditioApi, **source: Any) -> Path:
    return write_config(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}", sources=source_config(fake.url, **source))


def invoke(path: Path, key: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(path), *args],
                              env={**ENV, "LEADITIO_API_KEY": key, **(env or {})})


def lead_ids(tmp_path: Path) -> list[str]:
    store = Store(f"sqlite:///{tmp_path / 'connector.db'}")
    try:
        with store.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(events.c.lead_id))]
    except sa.exc.OperationalError:
        return []
    finally:
        store.dispose()


def test_backfill_with_filters_prints_a_summary(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "--source", "leaditio", "--vertical", "solar", "--from", "2026-01-01",
                    "--to", "2026-01-31", "--no-progress")
    assert result.exit_code == 0, result.output
    solar = [make_lead(n)["id"] for n in range(150) if make_lead(n)["vertical"] == "solar"]
    assert sorted(lead_ids(tmp_path)) == sorted(solar)
    assert "enqueued" in result.output and f"│ {len(solar)} " in result.output.replace("  ", " ")
    assert "done" in result.output


def test_rerun_fetches_nothing_and_logs_progress_without_a_terminal(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    assert invoke(path, key, "backfill", "-s", "leaditio").exit_code == 0
    details = fake.requests["detail"]
    again = invoke(path, key, "backfill", "-s", "leaditio", "--log-every", "0")
    assert again.exit_code == 0, again.output
    assert fake.requests["detail"] == details == 150
    assert '"message": "backfill leaditio: ' in again.output  # JSON log lines off a terminal
    assert "already present" in again.output


def test_summary_as_json(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", "--limit", "10", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)  # the whole output is the document: no log lines in it
    assert summary["ok"] and summary["counts"]["enqueued"] == 10 and summary["job"]["source"] == "leaditio"
    assert not summary["done"] and len(lead_ids(tmp_path)) == 10


def test_progress_bar_on_request(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", "--progress")
    assert result.exit_code == 0, result.output
    assert "backfill leaditio" in result.output and "150/150" in result.output


def test_dry_run_writes_nothing(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", "--dry-run", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "sample → leads_file" in result.output
    assert "[email]" in result.output and "@example.com" not in result.output
    assert lead_ids(tmp_path) == [] and fake.requests["detail"] == 5


def test_unknown_destination_is_refused_before_any_request(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", "--destination", "leads_fil")
    assert result.exit_code == 2 and "no destination named 'leads_fil'" in result.output
    assert "leads_file" in result.output and sum(fake.requests.values()) == 0


def test_destination_option_sends_only_there(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", "-d", "leads_file", "--limit", "10")
    assert result.exit_code == 0, result.output
    assert "run the same command again to continue" in result.output and len(lead_ids(tmp_path)) == 10


def test_wrong_key_exits_non_zero_with_what_to_do(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "backfill", "-s", "leaditio", env={"LEADITIO_API_KEY": "wrong"})
    assert result.exit_code == 1
    assert "check LEADITIO_API_KEY" in result.output and "[unauthorized]" in result.output


def test_plan_without_api_access(tmp_path, key):
    with FakeLeaditioApi([make_lead(1)], keys={key: False}) as fake:
        path = config_file(tmp_path, fake)
        result = invoke(path, key, "stats", "-s", "leaditio")
    assert result.exit_code == 1 and "plan does not include API access" in result.output


def test_missing_api_key(tmp_path, fake, key):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}",
                        sources=source_config(fake.url, api={"api_key": None}))
    result = CliRunner().invoke(main, ["--config", str(path), "stats", "-s", "leaditio"], env={**ENV})
    assert result.exit_code == 2 and "set LEADITIO_API_KEY" in result.output


def test_a_failed_lead_makes_the_exit_code_non_zero(tmp_path, fake, key):
    path = config_file(tmp_path, fake, api={"detail_concurrency": 1})
    fake.on_list = lambda f, listed: f.fail_next(1, 400) if listed and listed[0]["id"] == "lead_000149" else None
    result = invoke(path, key, "backfill", "-s", "leaditio")
    assert result.exit_code == 1 and "lead_000149" in result.output
    assert len(lead_ids(tmp_path)) == 149


def test_stats_table_and_json(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    table = invoke(path, key, "stats", "--source", "leaditio")
    assert table.exit_code == 0 and "leads received" in table.output and "pro" in table.output
    as_json = invoke(path, key, "stats", "--source", "leaditio", "--json")
    assert json.loads(as_json.output)["leads_received"] == 150


def test_webhooks_register_sends_the_first_secret_and_default_events(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "webhooks", "register", "--source", "leaditio", "--url", "https://crm.example.com")
    assert result.exit_code == 0, result.output
    hook = fake.webhooks[0]
    assert hook["url"] == "https://crm.example.com/webhooks/leaditio"
    assert hook["secret"] == ENV["LEADITIO_WEBHOOK_SECRET"] and hook["events"] == ["lead.new", "lead.updated"]
    assert "wh_" in result.output and ENV["LEADITIO_WEBHOOK_SECRET"] not in result.output


def test_webhooks_register_uses_the_sources_events(tmp_path, fake, key):
    path = config_file(tmp_path, fake, events=["lead.new"])
    result = invoke(path, key, "webhooks", "register", "-s", "leaditio", "--url", "https://crm.example.com/")
    assert result.exit_code == 0, result.output
    assert fake.webhooks[0]["events"] == ["lead.new"]


def test_webhooks_register_reports_the_apis_refusal(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "webhooks", "register", "-s", "leaditio", "--url", "http://plain.example.com")
    assert result.exit_code == 1 and "url must be an HTTPS URL" in result.output and fake.webhooks == []


def test_unknown_source(tmp_path, fake, key):
    path = config_file(tmp_path, fake)
    result = invoke(path, key, "stats", "-s", "leaditoi")
    assert result.exit_code == 2 and "did you mean" in result.output.lower()


@pytest.mark.slow
def test_a_killed_backfill_process_resumes_without_duplicates_or_gaps(tmp_path, key):
    """A dyno restart: SIGKILL mid-run, then the same command again."""
    with FakeLeaditioApi([make_lead(n) for n in range(250)], keys={key: True}, rate_limit=60, window=1) as fake:
        path = config_file(tmp_path, fake)
        env = {**os.environ, **ENV, "LEADITIO_API_KEY": key, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen([sys.executable, "-m", "connector", "--config", str(path), "backfill", "-s",
                                    "leaditio", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(lead_ids(tmp_path)) >= 100, timeout=30, interval=0.1)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=10)
        killed_at = len(lead_ids(tmp_path))
        assert killed_at < 250
        store = Store(f"sqlite:///{tmp_path / 'connector.db'}")
        saved = store.checkpoint("leaditio", Job("leaditio").key)
        store.dispose()
        assert saved is not None and not saved["done"]
        fake.rate_limit = 5000
        time.sleep(0.01)
        result = invoke(path, key, "backfill", "-s", "leaditio", "--no-progress")
        assert result.exit_code == 0, result.output
        assert "resuming backfill" in result.output
    ids = lead_ids(tmp_path)
    assert len(ids) == 250 and len(set(ids)) == 250
