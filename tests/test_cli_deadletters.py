"""`deadletters list|retry` choose by destination, error code and time, say what a retry would do, and speak JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from connector.cli import main
from connector.runtime import load_runtime
from connector.web import create_app
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import ENV, cli_for, leaditio_payload, post_webhook, write_config


def test_dead_letters_filtered_dry_run_and_json(tmp_path, database_url, fake_crm):
    path = write_config(tmp_path, database_url,
                        destinations={"crm": {"type": "http", "url": fake_crm.url, "mapping": "mappings/file.yaml"}},
                        routes=[{"source": "leaditio", "destination": "crm"}])
    cli = cli_for(path)

    cli("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    with serve(create_app(runtime)) as url:
        fake_crm.fail_next(400, body={"code": "invalid_email", "message": "email refused"})
        fake_crm.fail_next(400, body={"code": "missing_field", "message": "province refused"})
        assert post_webhook(url, leaditio_payload("lead_one")).ok
        assert post_webhook(url, leaditio_payload("lead_two")).ok
        Worker(runtime).drain(timeout=15)

    every = json.loads(cli("deadletters", "list", "--json"))
    assert len(every) == 2
    codes = {r["lead"]: r["error_code"] for r in every}
    code = codes["leaditio:lead_one"]
    assert code and code != codes["leaditio:lead_two"]
    chosen = json.loads(cli("deadletters", "list", "--json", "--error-code", code))
    assert [r["lead"] for r in chosen] == ["leaditio:lead_one"]
    assert len(json.loads(cli("deadletters", "list", "--json", "--since", "1h"))) == 2
    assert json.loads(cli("deadletters", "list", "--json", "--until", "1h")) == []
    assert len(json.loads(cli("deadletters", "list", "--json", "--since", "2026-01-01", "-d", "crm"))) == 2
    assert json.loads(cli("deadletters", "list", "--json", "-d", "elsewhere")) == []
    assert "is neither a date" in cli("deadletters", "list", "--since", "yesterday-ish", code=2)
    assert code in cli("deadletters", "list", "--error-code", code)

    dry = cli("deadletters", "retry", "--all", "--error-code", code, "--dry-run")
    assert f"1 dead letters would be queued again: {chosen[0]['id']}" in dry
    assert len(json.loads(cli("deadletters", "list", "--json"))) == 2  # a dry run changes nothing
    assert json.loads(cli("deadletters", "retry", "--all", "--since", "1h", "--until", "2h", "--dry-run",
                          "--json"))["count"] == 0
    done = json.loads(cli("deadletters", "retry", "--all", "--error-code", code, "--json"))
    assert done == {"dry_run": False, "count": 1, "delivery_ids": [chosen[0]["id"]]}
    left = json.loads(cli("deadletters", "list", "--json"))
    assert [r["lead"] for r in left] == ["leaditio:lead_two"]
    assert "0 dead letters queued again" in cli("deadletters", "retry", str(chosen[0]["id"]))  # no longer dead
    assert "name delivery ids, or use --all" in cli("deadletters", "retry", "--error-code", code, code=2)
    runtime.store.dispose()


def test_shell_completion_as_documented():
    """docs/operations.md tells users to eval this: it must be a script that completes our commands."""
    script = CliRunner(env={"_CONNECTOR_COMPLETE": "bash_source"}).invoke(main, [], prog_name="connector")
    assert script.exit_code == 0 and "_connector_completion" in script.output
    words = CliRunner(env={"_CONNECTOR_COMPLETE": "bash_complete", "COMP_WORDS": "connector dead",
                           "COMP_CWORD": "1"}).invoke(main, [], prog_name="connector")
    assert "deadletters" in words.output
    options = CliRunner(env={"_CONNECTOR_COMPLETE": "bash_complete", "COMP_WORDS": "connector deadletters retry --",
                             "COMP_CWORD": "3"}).invoke(main, [], prog_name="connector")
    assert "--error-code" in options.output and "--dry-run" in options.output
