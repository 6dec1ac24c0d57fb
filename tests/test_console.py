"""The console through Flask's test client: no page without a login, CSRF, lockouts, escaping, cookies.

The browser test (test_console_browser.py) walks the same pages in a real Chromium.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.config import load_config
from connector.errors import ConfigError
from connector.runtime import Runtime
from connector.store import Store
from connector.web import create_app
from connector.web.console.auth import _safe_next
from tests.conftest import ENV, leaditio_payload, sign, write_config

PASSWORD = "correct horse battery staple"
CONSOLE_ENV = {**ENV, "CONNECTOR_CONSOLE_PASSWORD": PASSWORD}


def make_app(tmp_path: Path, url: str, env: dict[str, str] | None = None, **console: Any) -> Any:
    path = write_config(tmp_path, url)
    if console:
        text = path.read_text() + "console:\n" + "".join(f"  {k}: {v}\n" for k, v in console.items())
        path.write_text(text)
    config = load_config(path, env=CONSOLE_ENV if env is None else env)
    store = Store(config.database.url)
    store.upgrade()
    return create_app(Runtime(config, store))


@pytest.fixture
def app(tmp_path: Path) -> Any:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}")
    yield app
    app.extensions["connector.runtime"].store.dispose()


def token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: FlaskClient, password: str = PASSWORD, **environ: Any) -> Any:
    page = client.get("/console/login", environ_base=environ)
    return client.post("/console/login", data={"csrf_token": token(page.text), "password": password},
                       environ_base=environ)


def post_lead(client: FlaskClient, **lead: Any) -> None:
    import json
    body = json.dumps(leaditio_payload(**lead)).encode()
    answer = client.post("/webhooks/leaditio", data=body,
                         headers={"Content-Type": "application/json", "X-Leaditio-Signature": sign(body)})
    assert answer.status_code == 200, answer.text
    assert "Set-Cookie" not in answer.headers  # the receiver never touches the console's session


def console_urls(app: Any) -> list[tuple[str, set[str]]]:
    """Every console route (but the open login page and stylesheet), with sample arguments."""
    samples = {"name": "leads_file", "source": "leaditio", "lead_id": "lead_abc123", "filename": "console.css"}
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("console.") or rule.endpoint in ("console.login", "console.static"):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = re.sub(rf"<(?:\w+:)?{arg}>", samples[arg], path)
        out.append((path, set(rule.methods or ()) - {"HEAD", "OPTIONS"}))
    return out


def test_every_console_page_refuses_without_a_login(app):
    client = app.test_client()
    post_lead(client)
    urls = console_urls(app)
    assert {"/console/destinations", "/console/leads", "/console/leads/leaditio/lead_abc123", "/console/deadletters",
            "/console/secrets", "/console/runs", "/console/deadletters/retry/confirm"} <= {u for u, _ in urls}
    for url, methods in urls:
        if "GET" in methods:
            answer = client.get(url)
            assert answer.status_code == 302, url
            assert answer.headers["Location"].startswith("/console/login?next="), url
        if "POST" in methods:
            page = client.get("/console/login")  # a valid CSRF token does not stand in for a login
            answer = client.post(url, data={"csrf_token": token(page.text), "id": "1", "q": "lead_abc123"})
            assert answer.status_code == 403, url
            assert "lead_abc123" not in answer.text
    assert log_in(client).status_code == 302
    for url, methods in urls:
        if "GET" in methods:
            assert client.get(url).status_code in (200, 302), url


def test_console_is_off_without_a_password(tmp_path):
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}", env=ENV)
    client = app.test_client()
    for url in ("/console/login", "/console/destinations", "/console/leads"):
        answer = client.get(url)
        assert answer.status_code == 404
        assert "CONNECTOR_CONSOLE_PASSWORD" in answer.text and "Set-Cookie" not in answer.headers
    page = client.post("/console/login", data={"password": ""})
    assert page.status_code == 404


def test_a_short_password_stops_start_up(tmp_path):
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}")
    with pytest.raises(ConfigError, match="CONNECTOR_CONSOLE_PASSWORD is 5 characters long"):
        load_config(path, env={**ENV, "CONNECTOR_CONSOLE_PASSWORD": "short"})


def test_forms_without_the_csrf_token_are_refused(app):
    client = app.test_client()
    page = client.get("/console/login")
    assert client.post("/console/login", data={"password": PASSWORD}).status_code == 400
    assert client.post("/console/login", data={"password": PASSWORD, "csrf_token": "forged"}).status_code == 400
    assert log_in(client).status_code == 302
    runtime = app.extensions["connector.runtime"]
    runtime.store.pause("leads_file", time.time() + 3600, "config", "bad mapping")
    # The token from before the login is not this session's any more.
    assert client.post("/console/destinations/leads_file/resume", data={"csrf_token": token(page.text)}).status_code == 400
    assert client.post("/console/destinations/leads_file/resume", data={}).status_code == 400
    assert client.post("/console/logout", data={}).status_code == 400
    assert "leads_file" in runtime.store.pauses()
    other = app.test_client()  # another browser's token, valid for its own session only
    log_in(other)
    foreign = token(other.get("/console/destinations").text)
    assert client.post("/console/destinations/leads_file/resume", data={"csrf_token": foreign}).status_code == 400
    assert "leads_file" in runtime.store.pauses()
    mine = token(client.get("/console/destinations").text)
    answer = client.post("/console/destinations/leads_file/resume", data={"csrf_token": mine}, follow_redirects=True)
    assert answer.status_code == 200 and "leads_file resumed" in answer.text
    assert "leads_file" not in runtime.store.pauses()


def test_session_cookie_is_http_only_same_site_and_secure_over_https(app):
    client = app.test_client()
    page = client.get("/console/login")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie and "Secure" not in cookie
    secure = app.test_client().get("/console/login", base_url="https://connector.example")
    assert "Secure" in secure.headers["Set-Cookie"]
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"


def test_changing_the_password_logs_everyone_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'connector.db'}"
    app = make_app(tmp_path, url)
    client = app.test_client()
    assert log_in(client).status_code == 302
    assert client.get("/console/destinations").status_code == 200
    cookie = client.get_cookie("connector_console", path="/console")
    changed = make_app(tmp_path, url, env={**ENV, "CONNECTOR_CONSOLE_PASSWORD": "another long password"})
    other = changed.test_client()
    other.set_cookie("connector_console", cookie.value, path="/console")
    assert other.get("/console/destinations").status_code == 302


@given(st.text(max_size=60))
def test_after_login_the_console_only_sends_you_within_itself(target):
    from flask import Flask
    app = Flask(__name__)
    app.add_url_rule("/console/destinations", "console.destinations", lambda: "")
    with app.test_request_context():
        chosen = _safe_next(target)
    assert chosen == "/console/destinations" or (chosen == target and target.startswith("/console")
                                                 and not target.startswith("//"))


def test_wrong_passwords_lock_out_the_client_then_everyone(tmp_path, database_url):
    # Two apps on one database: two gunicorn workers. The lockout lives in the database, not in either.
    first = make_app(tmp_path, database_url, lockout_failures=3, lockout_global_failures=5,
                     lockout_duration="2s", lockout_window="1m")
    second = create_app(Runtime(first.extensions["connector.runtime"].config, first.extensions["connector.runtime"].store))
    one, two = first.test_client(), second.test_client()
    a, b, c = {"REMOTE_ADDR": "198.51.100.1"}, {"REMOTE_ADDR": "198.51.100.2"}, {"REMOTE_ADDR": "198.51.100.3"}
    assert log_in(one, "wrong password 1", **a).status_code == 401
    assert log_in(two, "wrong password 2", **a).status_code == 401
    locked = log_in(one, "wrong password 3", **a)
    assert locked.status_code == 429 and "Too many wrong passwords" in locked.text
    right = log_in(two, PASSWORD, **a)  # even the right password: not compared while locked
    assert right.status_code == 429
    assert two.get("/console/destinations", environ_base=a).status_code == 302
    assert log_in(one, PASSWORD, **b).status_code == 302  # another client is not locked out by a's failures
    assert log_in(two, "wrong again", **c).status_code == 401
    assert log_in(two, "and again", **c).status_code == 429  # 5 in all: every client is locked out now
    assert log_in(first.test_client(), PASSWORD, **{"REMOTE_ADDR": "198.51.100.9"}).status_code == 429
    # A restart (a new app on the same database) remembers it.
    restarted = make_app(tmp_path, database_url, lockout_failures=3, lockout_global_failures=5,
                         lockout_duration="2s", lockout_window="1m")
    assert log_in(restarted.test_client(), PASSWORD, **b).status_code == 429
    first.extensions["connector.runtime"].store.dispose()
    restarted.extensions["connector.runtime"].store.dispose()


@pytest.mark.slow  # waits for a lockout to run out on the clock
def test_a_lockout_ends_after_its_duration(tmp_path):
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}", lockout_failures=1, lockout_duration="1s")
    client = app.test_client()
    assert log_in(client, "wrong password").status_code == 429
    assert log_in(client, PASSWORD).status_code == 429
    time.sleep(1.1)
    assert log_in(client, PASSWORD).status_code == 302


def test_lockouts_follow_the_counts_whatever_the_order_of_failures(tmp_path):
    """Generated sequences of wrong and right passwords from a few clients, against a plain model: a client
    is locked once it failed `per_client` times since its last success, everyone once all failed `overall`."""
    from connector.store.logins import EVERYONE, Limit
    from connector.store.schema import console_logins

    store = Store(f"sqlite:///{tmp_path / 'connector.db'}")
    store.upgrade()
    logins = store.logins()
    per_client, overall = 3, 7

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=25))
    def check(attempts: list[tuple[str, bool]]) -> None:
        with store.engine.begin() as conn:
            conn.execute(console_logins.delete())
        failures: dict[str, int] = {}
        total = 0
        for client, right in attempts:
            keys = [f"client:{client}", EVERYONE]
            model_locked = failures.get(client, 0) >= per_client or total >= overall
            assert (logins.locked_until(keys) is not None) == model_locked
            if model_locked:
                continue  # refused before the password is compared: nothing is counted
            if right:
                logins.succeeded(keys[0])
                failures[client] = 0
            else:
                logins.failed([Limit(keys[0], per_client), Limit(EVERYONE, overall)], window=3600, duration=3600)
                failures[client] = failures.get(client, 0) + 1
                total += 1

    check()
    store.dispose()


def test_the_client_behind_a_proxy_is_the_one_the_proxy_saw(tmp_path):
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}", trusted_proxies=1, lockout_failures=2)
    client = app.test_client()
    router = {"REMOTE_ADDR": "10.0.0.1"}
    for attempt in range(2):
        page = client.get("/console/login")
        client.post("/console/login", data={"csrf_token": token(page.text), "password": f"wrong {attempt}"},
                    environ_base=router, headers={"X-Forwarded-For": "spoofed, 203.0.113.7"})
    page = client.get("/console/login")
    other = client.post("/console/login", data={"csrf_token": token(page.text), "password": PASSWORD},
                        environ_base=router, headers={"X-Forwarded-For": "203.0.113.8"})
    assert other.status_code == 302  # the router's address is not what was locked out


def test_everything_shown_is_escaped(app):
    client = app.test_client()
    evil = "<script>alert(1)</script>"
    post_lead(client, first_name=evil, suburb=f"Sandton {evil}")
    runtime = app.extensions["connector.runtime"]
    [row] = runtime.store.deliveries_query(state="pending")
    runtime.store.requeue(delivery_ids=[row["id"]])
    with runtime.store.engine.begin() as conn:  # a CRM's error text can hold markup too
        from connector.store.schema import deliveries
        conn.execute(deliveries.update().values(state="dead", last_error=f"refused {evil}", last_error_code="x<b>"))
    log_in(client)
    pages = ["/console/leads", "/console/leads/leaditio/lead_abc123", "/console/leads/leaditio/lead_abc123?personal=1",
             "/console/deadletters", "/console/destinations"]
    shown = ""
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        assert "<script" not in page.text and "<b>" not in page.text, url
        shown += page.text
    assert "Sandton &lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "refused &lt;script&gt;" in shown and "x&lt;b&gt;" in shown


def test_personal_data_only_on_the_lead_page_and_masked_until_asked(app):
    client = app.test_client()
    post_lead(client, first_name="Nomvula")
    log_in(client)
    csrf = token(client.get("/console/leads").text)
    found = client.post("/console/leads", data={"csrf_token": csrf, "q": "THABO.M@gmail.com"})
    assert "lead_abc123" in found.text
    for phone in ("082 345 6789", "+27 82 345 6789", "0027823456789"):
        assert "lead_abc123" in client.post("/console/leads", data={"csrf_token": csrf, "q": phone}).text
    assert "lead_abc123" not in client.post("/console/leads", data={"csrf_token": csrf, "q": "0829999999"}).text
    listed = client.get("/console/leads").text + client.get("/console/deadletters").text
    for personal in ("thabo.m@gmail.com", "823456789", "Nomvula"):
        assert personal not in listed
    masked = client.get("/console/leads/leaditio/lead_abc123").text
    assert "thabo.m@gmail.com" not in masked and "823456789" not in masked and "Nomvula" not in masked
    assert "[email]" in masked and "[name]" in masked
    shown = client.get("/console/leads/leaditio/lead_abc123?personal=1").text
    assert "thabo.m@gmail.com" in shown and "Nomvula" in shown
    missing = client.get("/console/leads/leaditio/no_such_lead")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text


def test_without_its_database_the_console_says_so_and_webhooks_are_not_touched(app):
    import sqlalchemy as sa

    class Down:
        def signing_key(self) -> str:
            raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    app.extensions["connector.runtime"].store.logins = lambda: Down()
    client = app.test_client()
    page = client.get("/console/login")
    assert page.status_code == 503 and "cannot be read" in page.text and "Set-Cookie" not in page.headers
    assert client.post("/console/login", data={"password": PASSWORD}).status_code == 503
    post_lead(client)  # the receiver never asks for the console's key


def test_dead_letters_filter_and_retry_after_a_confirmation(app):
    from connector.store.schema import deliveries
    client = app.test_client()
    for index in range(4):
        post_lead(client, lead_id=f"lead_{index}")
    runtime = app.extensions["connector.runtime"]
    ids = sorted(row["id"] for row in runtime.store.deliveries_query(state="pending"))
    old = time.time() - 3 * 86400
    with runtime.store.engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id.in_(ids[:3]))
                     .values(state="dead", last_error="refused", last_error_code="http_400"))
        conn.execute(deliveries.update().where(deliveries.c.id == ids[2]).values(last_error_code="INVALID_EMAIL",
                                                                                updated_at=old))
    log_in(client)
    everything = client.get("/console/deadletters").text
    assert all(f"lead_{i}" in everything for i in range(3)) and "lead_3" not in everything
    by_code = client.get("/console/deadletters?error_code=http_400").text
    assert "lead_0" in by_code and "lead_2" not in by_code
    day = time.strftime("%Y-%m-%d", time.gmtime(old))
    by_date = client.get(f"/console/deadletters?until={day}").text
    assert "lead_2" in by_date and "lead_0" not in by_date
    assert "not a date" in client.get("/console/deadletters?since=yesterday").text
    assert "No dead letters match" in client.get("/console/deadletters?destination=nowhere").text

    csrf = token(everything)
    confirm = client.post("/console/deadletters/retry", data={"csrf_token": csrf, "which": "selected",
                                                              "id": [str(ids[0]), str(ids[1]), str(ids[3])],
                                                              "listed": [str(i) for i in ids[:3]]})
    assert confirm.status_code == 200
    assert re.search(r'id="retry-count"><strong>2</strong> dead letters will be sent again', confirm.text)
    assert "1 of those chosen are no longer dead letters" in confirm.text
    assert runtime.store.deliveries_query(state="dead", limit=None).__len__() == 3  # nothing yet
    done = client.post("/console/deadletters/retry/confirm",
                       data={"csrf_token": token(confirm.text), "id": [str(ids[0]), str(ids[1])]}, follow_redirects=True)
    assert "2 dead letters queued again" in done.text
    assert [row["id"] for row in runtime.store.deliveries_query(state="dead", limit=None)] == [ids[2]]
    every = client.post("/console/deadletters/retry", data={"csrf_token": token(done.text), "which": "all",
                                                            "listed": [str(ids[2])]})
    assert re.search(r"<strong>1</strong> dead letter will be sent again", every.text)


def test_secrets_and_runs_pages(app):
    client = app.test_client()
    post_lead(client)
    runtime = app.extensions["connector.runtime"]
    runtime.store.save_checkpoint("leaditio", "job1", {"source": "leaditio", "filters": {"vertical": "solar"},
                                                        "destinations": None},
                                  {"pass": 1, "total": 200, "done_in_pass": 50, "counts": {"fetched": 50},
                                   "started_at": time.time()}, done=False)
    log_in(client)
    secrets = client.get("/console/secrets").text
    assert "LEADITIO_WEBHOOK_SECRET_PREVIOUS" in secrets and "safe to retire" in secrets
    assert "whsec_test" not in secrets  # values never
    run = runtime.store.start_reconcile_run("leaditio", "schedule", time.time() - 3600, time.time())
    runtime.store.finish_reconcile_run(run, listed=40, missing=3, recovered=3, state="ok", error=None,
                                       summary="3 leads delivered on 2026-05-20 never reached us by webhook: "
                                               "recovered", missing_ids=["a", "b", "c"])
    runs = client.get("/console/runs").text
    assert "50 of 200 (25%)" in runs and "vertical=solar" in runs and "Reconcile runs" in runs
    assert "40 listed, 3 never received, 3 recovered" in runs and "never reached us by webhook" in runs


def test_destinations_page_shows_speed_to_lead(app):
    from connector.store.claiming import Verdict

    client = app.test_client()
    post_lead(client)
    runtime = app.extensions["connector.runtime"]
    batch = runtime.store.claim("leads_file", 10, "w1", 30)
    now = time.time()
    assert runtime.store.settle("w1", [Verdict(item, "delivered", crm_id="1", written_at=now, speed_to_lead=4.0)
                                       for item in batch.claimed])
    log_in(client)
    page = client.get("/console/destinations").text
    assert "leaditio: median 4 s, p90 4 s (1 lead)" in page


def test_recent_leads_and_backfill_runs_read_the_same_on_both_databases(tmp_path, database_url):
    app = make_app(tmp_path, database_url)
    client = app.test_client()
    for index in range(3):
        post_lead(client, lead_id=f"lead_{index}")
    post_lead(client, lead_id="lead_0", event="lead.updated", timestamp="2026-05-21T10:00:00Z")
    store = app.extensions["connector.runtime"].store
    recent = store.recent_leads(limit=2)
    assert [(lead.lead_id, lead.events) for lead in recent] == [("lead_0", 2), ("lead_2", 1)]
    store.save_checkpoint("leaditio", "older", {"source": "leaditio"}, {"total": 5}, done=True)
    store.save_checkpoint("leaditio", "newer", {"source": "leaditio"}, {"total": 9})
    runs = store.checkpoints()
    assert [(run["job_key"], run["done"], run["state"]["total"]) for run in runs] == [("newer", False, 9),
                                                                                   ("older", True, 5)]
    store.dispose()
