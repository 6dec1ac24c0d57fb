"""`connector forget` and what follows it, on both databases: nothing of the person left in a full dump,
explain still tells the story, replay refuses, and a new lead of theirs is refused or admitted by config."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.runtime import load_runtime
from connector.store import eventlog
from connector.store.schema import backfill_checkpoints, deliveries, destination_health, events
from connector.web import create_app
from connector.worker import Worker
from tests.conftest import ENV, cli_for, leaditio_payload, sign
from tests.privacy_helpers import OTHER_EMAIL, OTHER_PHONE, dump, person_in, privacy_config


def post(runtime: Any, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    answer = create_app(runtime).test_client().post(
        "/webhooks/leaditio", data=body, headers={"Content-Type": "application/json", "X-Leaditio-Signature": sign(body)})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def person_payload(lead_id: str, stamp: str, phone: str = "+27823456789", email: str = "Thabo.M@Gmail.com",
                   notes_phone: str = "082 345 6789", **extra: Any) -> dict[str, Any]:
    """A lead whose free text quotes the number in another spelling and the email in capitals."""
    payload = leaditio_payload(lead_id, timestamp=stamp, last_name="Mokoena",
                               notes=f"call {notes_phone} after five, or mail {email.upper()}", **extra)
    payload["contact"] = {"phone": phone, "email": email}
    return payload


def setup_person(tmp_path: Path, database_url: str, privacy: dict[str, Any]) -> tuple[Any, Any]:
    path = privacy_config(tmp_path, database_url, privacy)
    cli = cli_for(path)
    cli("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    post(runtime, person_payload("lead_A", "2026-05-20T10:00:00Z"))
    post(runtime, person_payload("lead_A", "2026-05-20T11:00:00Z", event="lead.updated"))
    post(runtime, person_payload("lead_C", "2026-05-20T12:00:00Z", phone="082 345 6789", email="other@x.co.za"))
    other = leaditio_payload("lead_B", timestamp="2026-05-20T10:30:00Z")
    other["contact"] = {"phone": OTHER_PHONE, "email": OTHER_EMAIL}
    post(runtime, other)
    Worker(runtime).drain(timeout=20)
    post(runtime, person_payload("lead_A", "2026-05-21T10:00:00Z", event="lead.updated"))  # pending
    store = runtime.store
    with store.engine.begin() as conn:  # the person quoted where only a bug or an old version would put them
        conn.execute(deliveries.update().where(deliveries.c.id == 1)
                     .values(last_error="CRM said: 0823456789 / thabo.m@gmail.com is a duplicate"))
        conn.execute(destination_health.insert().values(
            destination="leads_file", failing_since=time.time(), failures=1,
            last_error="duplicate +27 82 345 6789", updated_at=time.time()))
        conn.execute(backfill_checkpoints.insert().values(
            source="leaditio", job_key="j1", params=json.dumps({"q": "THABO.M@GMAIL.COM"}),
            state=json.dumps({"page": 2}), done=False, updated_at=time.time()))
    return cli, runtime


@pytest.mark.slow
@pytest.mark.parametrize("keys", [[], ["K1"]], ids=["plain", "encrypted"])
def test_forget_erases_the_person_everywhere_and_refuses_their_next_lead(tmp_path, database_url, keys,
                                                                          monkeypatch) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setitem(ENV, "CONNECTOR_ENCRYPTION_KEY", key)
    monkeypatch.setattr(eventlog, "TOMBSTONE_RECHECK", 0.0)  # the receiver looks for tombstones at once
    privacy = {"encryption_keys": ["${CONNECTOR_ENCRYPTION_KEY}"]} if keys else {}
    cli, runtime = setup_person(tmp_path, database_url, privacy)
    store = runtime.store
    before = dump(store, [key])
    assert person_in(before)
    if keys:  # sealed at rest: the raw bodies and leads hold neither the email nor the number
        with store.engine.connect() as conn:
            raw = conn.execute(sa.select(events.c.lead_json, events.c.body)).all()
        assert all(lead.startswith("fernet:") and bytes(body).startswith(b"fernet:") for lead, body in raw)
        assert person_in(" ".join(f"{lead} {bytes(body).decode()}" for lead, body in raw)) == []

    dry = json.loads(cli("forget", "--phone", "082-345-6789", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["events"] == 4
    assert sorted(lead["lead_id"] for lead in dry["leads"]) == ["lead_A", "lead_C"]
    assert dry["erased"]["events (leads)"] == 4 and dry["erased"]["deliveries (pending, now skipped)"] == 1
    assert dry["erased"]["destination health"] == 1 and dry["erased"]["backfill checkpoints"] == 1
    assert dump(store, [key]) == before  # a dry run changes nothing

    text = cli("forget", "--phone", "082-345-6789", "--reason", "ticket 42")
    assert "events (raw bodies)" in text and "lead state" in text
    after = dump(store, [key])
    assert person_in(after) == [], person_in(after)
    assert "mokoena" not in after.lower()
    assert OTHER_EMAIL in after and OTHER_PHONE in after  # nobody else was erased
    status = json.loads(cli("status", "--json"))
    assert status["privacy"]["tombstones"] == 3  # both emails the number was seen with, and the number
    assert status["privacy"]["skipped"] == {"forgotten": 1}  # the update that was still waiting

    # explain still tells the story; replay says it cannot
    story = json.loads(cli("explain", "lead_A", "--json"))
    assert len(story["events"]) == 3
    assert sum("replaced by markers (forget" in note for note in story["notes"]) == 3
    assert "cannot replay" in cli("replay", "--lead", "lead_A", code=1)

    # a later lead of the same person (another spelling of the number) is refused: stored bare, skipped
    answer = post(runtime, person_payload("lead_D", "2026-06-01T10:00:00Z", phone="0027823456789",
                                          email="someone.new@example.com"))
    assert answer["deliveries"] == 1
    Worker(runtime).drain(timeout=10)
    assert person_in(dump(store, [key])) == []
    status = json.loads(cli("status", "--json"))
    assert status["privacy"]["skipped"] == {"forgotten": 2}
    story = json.loads(cli("explain", "lead_D", "--json"))
    assert story["events"][0]["deliveries"][0]["state"] == "skipped"
    assert "forgotten" in story["events"][0]["deliveries"][0]["last_error"]
    leads_file = (tmp_path / "leads.jsonl").read_text()
    assert "lead_D" not in leads_file


@pytest.mark.slow
def test_after_forget_admit_lets_the_next_lead_in(tmp_path, database_url) -> None:
    cli, runtime = setup_person(tmp_path, database_url, {"after_forget": "admit"})
    cli("forget", "--email", " THABO.M@gmail.com ")
    post(runtime, person_payload("lead_E", "2026-06-01T10:00:00Z"))
    Worker(runtime).drain(timeout=10)
    assert "lead_E" in (tmp_path / "leads.jsonl").read_text()
    with runtime.store.engine.connect() as conn:
        skipped = conn.execute(sa.select(sa.func.count()).select_from(deliveries)
                               .where(deliveries.c.last_error_code == "forgotten")).scalar()
    assert skipped == 1  # only the pending one forget itself stopped


@pytest.mark.slow
def test_an_opted_out_person_is_stored_without_personal_data_and_not_delivered(tmp_path, database_url) -> None:
    (tmp_path / "optouts.txt").write_text("# people who objected\n(082) 345-6789\nnobody@example.com\n")
    path = privacy_config(tmp_path, database_url, {"opt_out_file": "optouts.txt"})
    cli = cli_for(path)
    cli("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    post(runtime, person_payload("lead_O", "2026-06-01T10:00:00Z", email="fresh@example.com"))
    other = leaditio_payload("lead_B")
    other["contact"] = {"phone": OTHER_PHONE, "email": OTHER_EMAIL}
    post(runtime, other)
    Worker(runtime).drain(timeout=10)
    assert person_in(dump(runtime.store), email="fresh@example.com") == []
    assert json.loads(cli("status", "--json"))["privacy"]["skipped"] == {"opted_out": 1}
    assert "opted out" in cli("explain", "lead_O")
    assert "not delivered 1 (opted out)" in cli("status")
    written = (tmp_path / "leads.jsonl").read_text()
    assert "lead_B" in written and "lead_O" not in written


def test_privacy_mistakes_name_the_file_line_and_key(tmp_path, database_url) -> None:
    path = privacy_config(tmp_path, database_url, {"erase": {"leads_fil": {"action": "none"}}})
    out = cli_for(path)("status", code=2)
    assert "privacy.erase.leads_fil" in out and "leads_file" in out and "config.yaml:" in out
    path = privacy_config(tmp_path, database_url, {"opt_out_file": "missing.txt"})
    out = cli_for(path)("status", code=2)
    assert "privacy.opt_out_file" in out and "missing.txt" in out
    path = privacy_config(tmp_path, database_url, {"keep_personal_data": "soon"})
    assert "keep_personal_data" in cli_for(path)("status", code=2)
