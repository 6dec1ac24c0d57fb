"""Any lead, through every shipped mapping: it maps or it is a dead letter with a message; nothing
raises out of the worker, and the valid leads queued behind it are delivered (both databases)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from connector.intake import accept_many
from connector.lead import CORE_LEAD_FIELDS, InboundEvent, mapping_input
from connector.mapping import load_mapping
from connector.runtime import Runtime
from connector.sources import MARKETPLACES
from connector.store import Store
from connector.store.schema import DEAD, DELIVERED, PENDING
from connector.worker import Worker
from tests.conftest import ROOT, leaditio_payload, make_config

MAPPINGS = sorted(p.name for p in (ROOT / "mappings").glob("*.yaml"))
FIELDS = sorted(set(CORE_LEAD_FIELDS).union(*(cls.lead_fields for cls in MARKETPLACES.values())) - {"id"})

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Lo", "So"]), max_size=40),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates: no UTF-8 for them
    st.sampled_from(["", " ", "\x00", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "NaN", "1e400",
                     "R-5", "R1bn+", "+27 82 345 6789", "００１２３", "Σωκράτης", "김민준", "تامر"]),
    st.integers(1, 5).map(lambda n: "x" * (2000 * n)),
)
wild = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), odd_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)),
    max_leaves=6,
)
leads = st.dictionaries(st.sampled_from(FIELDS), wild, max_size=len(FIELDS))


def test_any_lead_maps_or_is_a_dead_letter_and_valid_leads_still_go(tmp_path: Path, database_url: str) -> None:
    destinations = {m.removesuffix(".yaml"): {"type": "file", "path": str(tmp_path / f"{m}.jsonl"),
                                              "mapping": f"mappings/{m}"} for m in MAPPINGS}
    config = make_config(tmp_path, database_url, destinations=destinations,
                         routes=[{"source": "leaditio", "destination": name} for name in destinations],
                         worker={"retry_horizon": 0.3, "backoff_base": 0.02, "backoff_max": 0.05})
    store = Store(config.database.url)
    store.upgrade()
    marketplace = Runtime(config).marketplaces["leaditio"]
    valid = marketplace.parse(json.dumps(leaditio_payload()).encode()).lead
    # Which mappings take the documented lead at all (the LeadOS ones require a company, say).
    takes_valid = {name for name in destinations
                   if _maps(config.resolve(destinations[name]["mapping"]), valid)}

    @given(batch=st.lists(leads, min_size=1, max_size=4))
    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
    def run(batch: list[dict]) -> None:
        run_id = uuid.uuid4().hex[:8]
        items = []
        for index, lead in enumerate([*batch, valid, valid]):
            lead_id = f"f{run_id}_{index}"
            document = {**lead, "id": lead_id}
            body = json.dumps(document).encode()
            items.append((InboundEvent(source="leaditio", event_key=f"{lead_id}", event_type="lead.new",
                                       occurred_at=1.7e9, lead_id=lead_id, lead=document), body))
        accept_many(config, store, items)
        Worker(Runtime(config, store)).drain(timeout=60)
        rows = [r for r in store.deliveries_query(limit=10_000) if r["lead_key"].startswith(f"leaditio:f{run_id}_")]
        assert rows and all(r["state"] != PENDING for r in rows)
        for row in rows:
            if row["state"] == DEAD:
                assert row["last_error"], row
        good = {f"leaditio:f{run_id}_{len(batch)}", f"leaditio:f{run_id}_{len(batch) + 1}"}
        for row in rows:
            if row["lead_key"] in good and row["destination"] in takes_valid:
                assert row["state"] == DELIVERED, row

    run()


def _maps(path: Path, lead: dict) -> bool:
    try:
        load_mapping(path).apply(mapping_input(lead, source="leaditio", event="lead.new", marketplace="leaditio"))
    except Exception:
        return False
    return True
