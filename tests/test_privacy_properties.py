"""A property over generated people and forms: after `forget` by any spelling of the phone or the email, no
spelling of either is left anywhere in the database (every table, raw and decrypted), on both databases,
whichever marketplace's form the leads came in, and nobody else is touched."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from connector.intake import accept
from connector.privacy.forget import forget
from connector.privacy.retention import apply_retention
from connector.runtime import load_runtime
from tests.conftest import ENV, cli_for
from tests.privacy_helpers import dump, privacy_config

SPELLINGS = [
    lambda n: f"0{n}", lambda n: f"+27{n}", lambda n: f"+27 {n[:2]} {n[2:5]} {n[5:]}", lambda n: f"0{n[:2]} {n[2:5]} {n[5:]}",
    lambda n: f"0{n[:2]}-{n[2:5]}-{n[5:]}", lambda n: f"(0{n[:2]}) {n[2:5]} {n[5:]}", lambda n: f"0027{n}",
    lambda n: f"27{n}", lambda n: f"+27-{n[:2]}-{n[2:5]}-{n[5:]}", lambda n: f"0{n[:2]}.{n[2:5]}.{n[5:]}",
    lambda n: f"+27 (0) {n[:2]} {n[2:5]} {n[5:]}",
]
nationals = st.tuples(st.sampled_from("678"), st.text("0123456789", min_size=8, max_size=8)).map(lambda t: t[0] + t[1])
emails = st.emails().filter(lambda e: len(e) < 80 and "%" not in e)
spelling = st.integers(0, len(SPELLINGS) - 1)
forms = st.lists(st.tuples(st.sampled_from(["leaditio", "leados"]), spelling, spelling), min_size=1, max_size=3)


def body(form: str, lead_id: str, email: str, phone: str, notes_phone: str, n: int) -> bytes:
    if form == "leaditio":
        return json.dumps({"event": "lead.new" if n == 0 else "lead.updated", "timestamp": f"2026-05-20T10:0{n}:00Z",
                           "lead": {"id": lead_id, "first_name": "Ayanda", "last_name": "Dlamini",
                                    "notes": f"whatsapp {notes_phone}; {email.upper()}"},
                           "contact": {"phone": phone, "email": email}}).encode()
    return json.dumps({"event": "lead.delivered", "delivery_id": f"del_{lead_id}_{n}", "campaign_id": "c1",
                       "lead": {"id": f"del_{lead_id}_{n}", "full_name": "Ayanda Dlamini", "email": email,
                                "phone": phone, "company_name": f"call {notes_phone}",
                                "geography": "Sandton, South Africa"}}).encode()


def test_no_spelling_of_a_forgotten_person_survives(tmp_path, database_url) -> None:
    path = privacy_config(tmp_path, database_url, {}, sources={
        "leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]},
        "leados": {"marketplace": "leados", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]}},
        routes=[{"source": "leaditio", "destination": "leads_file"}, {"source": "leados", "destination": "leads_file"}])
    cli_for(path)("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    bystander = {"email": "bystander@example.org", "phone": "+27119998888"}
    accept(runtime.config, runtime.store, runtime.marketplaces["leaditio"].parse(
        body("leaditio", "by", bystander["email"], bystander["phone"], "011 999 8888", 0)),
        body("leaditio", "by", bystander["email"], bystander["phone"], "011 999 8888", 0))

    @settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(national=nationals, email=emails, leads=forms, by=st.sampled_from(["email", "phone"]), asked=spelling)
    def check(national: str, email: str, leads: list[tuple[str, int, int]], by: str, asked: int) -> None:
        lead_id = uuid.uuid4().hex[:10]
        for n, (form, phone_spelling, notes_spelling) in enumerate(leads):
            raw = body(form, lead_id, email, SPELLINGS[phone_spelling](national), SPELLINGS[notes_spelling](national), n)
            accept(runtime.config, runtime.store, runtime.marketplaces[form].parse(raw), raw)
        given_value: dict[str, Any] = {"email": email.swapcase()} if by == "email" else \
            {"phone": SPELLINGS[asked](national)}
        report = forget(runtime, **given_value)
        assert report.events >= len(leads)  # examples share a number now and then: one person, then
        text = dump(runtime.store).lower()
        found = [s(national) for s in SPELLINGS if s(national).lower() in text] + \
                ([email] if email.lower() in text else []) + ([national] if national in text else [])
        assert found == [], found
        assert bystander["email"] in text and "+27119998888" in text

    check()


def test_no_spelling_survives_retention(tmp_path, database_url) -> None:
    """The same for retention: events past their keep lose every spelling of their person; newer ones keep theirs."""
    path = privacy_config(tmp_path, database_url, {"keep_personal_data": "30d"}, sources={
        "leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]},
        "leados": {"marketplace": "leados", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]}}, routes=[])
    cli_for(path)("db", "upgrade")
    runtime = load_runtime(path, env=ENV)
    clock = [time.time()]

    @settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(national=nationals, email=emails, leads=forms)
    def check(national: str, email: str, leads: list[tuple[str, int, int]]) -> None:
        lead_id = uuid.uuid4().hex[:10]
        for n, (form, phone_spelling, notes_spelling) in enumerate(leads):
            raw = body(form, lead_id, email, SPELLINGS[phone_spelling](national), SPELLINGS[notes_spelling](national), n)
            accept(runtime.config, runtime.store, runtime.marketplaces[form].parse(raw), raw)
        assert email.lower() in dump(runtime.store).lower()  # within its keep: still there
        clock[0] += 31 * 86400  # every event so far is past its keep (received, never routed)
        assert apply_retention(runtime, clock[0]).events == len(leads)
        text = dump(runtime.store).lower()
        found = [s(national) for s in SPELLINGS if s(national).lower() in text] + \
                ([email] if email.lower() in text else []) + ([national] if national in text else [])
        assert found == [], found

    check()
