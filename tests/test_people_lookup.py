"""Finding a lead by email or phone through keyed hashes, and how each webhook secret is used."""

from __future__ import annotations

import time

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from connector.lead import InboundEvent
from connector.store import Store
from connector.store.people import PersonHasher, normal_phone
from connector.store.schema import events

# Every way a South African mobile number reaches us, and how people type it into a search box.
SAME_NUMBER = ["+27823456789", "+27 82 345 6789", "0823456789", "082 345 6789", "082-345-6789",
               "(082) 345 6789", "0027823456789", "27823456789", "+27-82-345-6789", "+27 (0)82 345 6789"]


def event(lead_id: str, email: str | None, phone: str | None, key: str | None = None) -> InboundEvent:
    return InboundEvent(source="leaditio", event_key=key or f"evt-{lead_id}", event_type="lead.new",
                        occurred_at=time.time(), lead_id=lead_id,
                        lead={"id": lead_id, "email": email, "phone": phone})


def test_a_lead_is_found_by_its_email_or_phone_in_any_format_and_the_values_are_not_stored_in_the_index(
        store: Store) -> None:
    store.record_event(event("L1", "Thabo.M@Gmail.com", "+27823456789"), ["crm"], body=b"1")
    store.record_event(event("L2", "someone@else.co.za", "+27715550000"), ["crm"], body=b"2")
    for phone in SAME_NUMBER:
        assert [f.lead_id for f in store.find_leads(phone=phone)] == ["L1"], phone
    assert [f.lead_id for f in store.find_leads(email="  thabo.m@gmail.COM ")] == ["L1"]
    assert [f.lead_id for f in store.find_leads(lead_id="L2")] == ["L2"]
    assert store.find_leads(email="nobody@example.com") == []
    assert store.find_leads() == []
    with store.engine.connect() as conn:
        hashes = conn.execute(sa.select(events.c.email_hash, events.c.phone_hash)).all()
    flat = " ".join(str(v) for row in hashes for v in row)
    assert "823456789" not in flat and "gmail" not in flat.lower()
    assert all(len(v) == 64 for row in hashes for v in row)


def test_each_database_keys_its_hashes_with_its_own_salt(store: Store, tmp_path) -> None:
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.upgrade()
    try:
        assert store.person_hasher().email("a@b.co") != other.person_hasher().email("a@b.co")
    finally:
        other.dispose()


def test_secret_usage_counts_uses_per_secret_in_the_window(store: Store) -> None:
    for n in range(3):
        store.record_event(event(f"N{n}", None, None), ["crm"], body=f"{n}".encode(), signature_index=0)
    store.record_event(event("OLD", None, None), ["crm"], body=b"old", signature_index=1)
    usage = store.secret_usage(window=3600)
    assert usage[("leaditio", 0)].uses_in_window == 3
    assert usage[("leaditio", 1)].uses_in_window == 1
    assert store.secret_usage(window=0)[("leaditio", 0)].uses_in_window == 0
    assert usage[("leaditio", 0)].last_used is not None


digits = st.text("0123456789", min_size=9, max_size=9).filter(lambda d: d[0] != "0")


@given(digits, st.sampled_from(["+27{d}", "0{d}", "0027{d}", "27{d}", "+27 {a} {b} {c}", "0{a}-{b}-{c}",
                                "(0{a}) {b} {c}"]))
def test_every_written_form_of_one_number_normalises_alike(d: str, form: str) -> None:
    written = form.format(d=d, a=d[:2], b=d[2:5], c=d[5:])
    assert normal_phone(written) == "27" + d
    hasher = PersonHasher("salt")
    assert hasher.phone(written) == hasher.phone("+27" + d)


def test_no_value_gives_no_hash() -> None:
    hasher = PersonHasher("salt")
    assert hasher.of_lead({}) == (None, None)
    assert hasher.phone("n/a") is None and hasher.email("not an email") is None


def test_the_migration_hashes_the_events_stored_before_it(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from connector.store import MIGRATIONS

    store = Store(database_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004_i18b_alert_state")
            conn.execute(sa.text(
                "INSERT INTO events (source, event_key, body_sha256, event_type, lead_id, occurred_at, received_at,"
                " origin, deliverable, lead_json) VALUES ('leaditio', 'k', 'h', 'lead.new', 'OLD1', 1, 1, 'webhook',"
                " true, '{\"email\": \"Old@Example.com\", \"phone\": \"082 345 6789\"}')"))
        store.upgrade()
        assert [f.lead_id for f in store.find_leads(phone="+27823456789")] == ["OLD1"]
        assert [f.lead_id for f in store.find_leads(email="old@example.com")] == ["OLD1"]
    finally:
        store.dispose()
