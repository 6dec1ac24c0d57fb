"""Configured secrets, emails and phones never leave the process: logs, stored errors, CLI output, /metrics."""

from __future__ import annotations

import json
import logging

import hypothesis.strategies as st
import requests
from click.testing import CliRunner
from hypothesis import given, settings

from connector.cli import main
from connector.config import load_config
from connector.logs import Redactor, setup_logging
from connector.runtime import Runtime
from connector.store import Store
from connector.web import create_app
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import ENV, leaditio_payload, post_webhook, write_config

TOKEN = "crm-token-5f1c9a7e0b2d4c68"
EMAIL = "nomsa.dlamini@example.co.za"
PHONE = "+27 82 555 0199"


def test_a_crm_error_quoting_the_token_an_email_and_a_phone_reaches_no_output(tmp_path, database_url,
                                                                              fake_crm, capsys):
    env = {**ENV, "CRM_TOKEN": TOKEN}
    path = write_config(tmp_path, database_url, routes=[{"source": "leaditio", "destination": "crm"}],
                        destinations={"crm": {"type": "http", "url": fake_crm.url, "mapping": "mappings/file.yaml",
                                              "headers": {"Authorization": "${CRM_TOKEN}"}}})
    config = load_config(path, env=env)
    store = Store(config.database.url)
    store.upgrade()
    quoted = f"token {TOKEN} refused for {EMAIL} / {PHONE}"
    fake_crm.fail_next(401, body={"code": "unauthorized", "message": quoted})
    fake_crm.fail_next(400, body={"code": "invalid", "message": quoted})
    setup_logging(json_lines=True)
    try:
        with serve(create_app(Runtime(config, store))) as url:
            post_webhook(url, leaditio_payload())
            worker = Worker(Runtime(config, store))
            worker.run_once("crm")  # 401: the destination pauses, its reason stored
            pause = store.pauses()["crm"]
            worker.drain(timeout=10)  # the pause runs out; 400: a dead letter with the CRM's words
            metrics = requests.get(f"{url}/metrics", timeout=5).text
    finally:
        logging.getLogger().handlers.clear()
    logged = capsys.readouterr().out
    [row] = store.deliveries_query()
    runner = CliRunner(env=env)
    status = runner.invoke(main, ["--config", str(path), "status", "--json"], catch_exceptions=False).output
    shown = runner.invoke(main, ["--config", str(path), "deadletters", "show", str(row["id"])],
                          catch_exceptions=False).output
    listed = runner.invoke(main, ["--config", str(path), "deadletters", "list"], catch_exceptions=False).output
    store.dispose()
    assert "[secret]" in shown and "[phone]" in listed  # placeholders are text, not eaten as console markup
    assert "paused" in logged and "[secret]" in logged and "[email]" in logged  # the lines were written
    assert row["state"] == "dead" and "[secret]" in row["last_error"]
    for text in (logged, pause["reason"], row["last_error"], status, shown, listed, metrics):
        for value in (TOKEN, EMAIL, PHONE, "555 0199"):
            assert value not in text
    assert json.loads(status)["events"] == 1


def test_redactor_takes_out_every_configured_secret_and_whitespace_variants():
    redact = Redactor(["abcdefghijklmnop", "  padded-secret-value\n", "short", ""])
    text = redact("a abcdefghijklmnop b padded-secret-value c short d x@y.co e 0821234567")
    assert text == "a [secret] b [secret] c short d [email] e [phone]"
    assert redact.secrets("x@y.co abcdefghijklmnop") == "x@y.co [secret]"


@settings(max_examples=200, deadline=None)
@given(secrets=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=16, max_size=40),
                        min_size=1, max_size=3),
       around=st.lists(st.text(max_size=20), min_size=2, max_size=5))
def test_no_configured_secret_survives_redaction_whatever_surrounds_it(secrets, around):
    """Whatever text a CRM or a library wraps around secrets (the 16-character minimum start-up enforces),
    none of them is left in a log line, a stored error or CLI output."""
    text = secrets[0].join(around) + "".join(f" {s} " for s in secrets)
    redacted = Redactor(secrets)(text)
    for secret in secrets:
        assert secret not in redacted
