"""The commands ops and CRM admins run, through click, against a real store and receiver."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.runtime import Runtime
from connector.store import Store
from connector.worker import Worker
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config


@pytest.fixture
def cli(tmp_path, database_url):  # noqa: ANN201
    path = write_config(tmp_path, database_url)
    runner = CliRunner(env={**ENV, "COLUMNS": "250"})

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run.path = path  # type: ignore[attr-defined]
    run("db", "upgrade")
    return run


def test_db_upgrade_is_repeatable(cli):
    assert "revision 0010_i20privacy_erasure" in cli("db", "upgrade")


def test_mappings_check_and_preview(cli, tmp_path):
    assert "✓ leads_file" in cli("mappings", "check")
    payload = tmp_path / "lead.json"
    payload.write_text(json.dumps(leaditio_payload(first_name="  nomsa ")))
    shown = json.loads(cli("mappings", "preview", "-d", "leads_file", "--payload", str(payload)))
    assert shown["record"]["first_name"] == "nomsa" and shown["record"]["phone"] == "+27823456789"
    assert "notes" not in shown
    bad_phone = leaditio_payload()
    bad_phone["contact"]["phone"] = "082 345 6789 0"
    payload.write_text(json.dumps(bad_phone))
    shown = json.loads(cli("mappings", "preview", "-d", "leads_file", "--payload", str(payload)))
    assert "phone" not in shown["record"]
    assert shown["notes"]["phone"].startswith("e164: not a valid South African number") and shown["notes"]["phone"].endswith("left empty")
    assert "status" in shown["record"] and "status" not in shown["sent_on_update"]
    (tmp_path / "mappings" / "file.yaml").write_text("fields:\n  x: {from: frist_name}\n")
    out = cli("mappings", "check", code=1)
    assert "file.yaml:2" in out and "did you mean 'first_name'" in out


def test_mappings_check_warns_of_fields_no_routed_marketplace_carries(cli, tmp_path, database_url):
    mapping = tmp_path / "mappings" / "file.yaml"
    mapping.write_text(mapping.read_text() + "  company: {from: company_name}\n"
                       "  note: {template: '{first_name} on {status}'}\n")
    lines = mapping.read_text().splitlines()
    out = cli("mappings", "check")  # a warning, not a failure: the file itself is valid
    assert "✓ leads_file" in out
    company = f"file.yaml:{lines.index('  company: {from: company_name}') + 1}: fields.company.from: 'company_name'"
    assert company in out and "comes only with leados leads" in out and "routed here (leaditio)" in out
    assert "fields.note.template: 'status' comes only with leadnod leads" in out
    assert "'first_name'" not in out  # every marketplace's leads have a first name
    unrouted = write_config(tmp_path, database_url, routes=[])  # only a backfill would choose its leads
    result = CliRunner(env=ENV).invoke(main, ["--config", str(unrouted), "mappings", "check"])
    assert result.exit_code == 0 and "✓ leads_file" in result.output and "comes only with" not in result.output


def test_config_problem_is_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("sources: {}\ndestinations: {}\nroutes: []\nwroker: {}\n")
    result = CliRunner().invoke(main, ["--config", str(bad), "status"])
    assert result.exit_code == 2
    assert "c.yaml:4" in result.output and "did you mean 'worker'" in result.output
    assert "Traceback" not in result.output


def test_send_test_status_deadletters_and_replay(cli, tmp_path, database_url):
    from connector.config import load_config
    from connector.web import create_app
    from fakes.server import serve

    config = load_config(cli.path, env=ENV)
    store = Store(config.database.url)
    with serve(create_app(Runtime(config, store))) as url:
        out = cli("send-test", "--url", url)
        assert "HTTP 200" in out and "accepted" in out
        post_webhook(url, leaditio_payload("lead_nolast"))
    status = json.loads(cli("status", "--json"))
    assert status["queue_depth"] == 2 and status["destinations"]["leads_file"]["pending"] == 2
    # a mapping that requires a field these leads lack turns them into dead letters
    mapping = tmp_path / "mappings" / "file.yaml"
    original = mapping.read_text()
    mapping.write_text(original + "  surname: {from: last_name, required: true}\n")
    Worker(Runtime(config, store)).drain(timeout=10)
    listed = cli("deadletters", "list")
    assert "leaditio:lead_nolast" in listed and "surname is required" in listed
    dead_id = store.deliveries_query(state="dead")[0]["id"]
    shown = cli("deadletters", "show", str(dead_id))
    assert "surname is required" in shown and "Sandton" in shown
    mapping.write_text(original)
    assert "2 dead letters queued again" in cli("deadletters", "retry", "--all")
    Worker(Runtime(config, store)).drain(timeout=10)
    assert json.loads(cli("status", "--json"))["destinations"]["leads_file"]["delivered"] == 2
    assert "1 deliveries queued again" in cli("replay", "--lead", "lead_nolast")
    cli("replay", "--lead", "no_such_lead", code=1)
    table = cli("status")
    assert "leads_file" in table and "queue depth: 1" in table
    store.dispose()


def test_sqlite_on_a_dyno_warns_loudly(tmp_path):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    runner = CliRunner(env={**ENV, "DYNO": "web.1"})
    runner.invoke(main, ["--config", str(path), "db", "upgrade"], catch_exceptions=False)
    result = runner.invoke(main, ["--config", str(path), "worker", "--drain", "--timeout", "1"])
    assert result.exit_code == 0
    assert "LEADS WILL BE LOST" in result.output


def test_every_command_has_help():
    runner = CliRunner()
    for args in (["--help"], ["serve", "--help"], ["worker", "--help"], ["db", "upgrade", "--help"],
                 ["mappings", "check", "--help"], ["mappings", "preview", "--help"], ["send-test", "--help"],
                 ["status", "--help"], ["deadletters", "list", "--help"], ["deadletters", "retry", "--help"],
                 ["replay", "--help"], ["crm", "setup", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args
