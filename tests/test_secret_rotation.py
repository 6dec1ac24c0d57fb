"""The webhook secret retirement signal: an alert once per change of state (through the real Apprise to a
local webhook, on SQLite and PostgreSQL), the same signal in `status` and `status --json`, and a
hypothesis property over sequences of uses and time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.alerts import RETIRE, Alert, Alerter
from connector.config import AlertsConfig, load_config
from connector.runtime import Runtime
from connector.store import SecretUse, Store
from connector.web import create_app
from tests.conftest import ENV, OLD_SECRET, SECRET, cli_for, leaditio_payload, post_webhook, write_config

HOUR = 3600.0


def setup(tmp_path: Path, database_url: str, alert_url: str, **alerts: Any) -> Runtime:
    # leaditio with two secrets, the new one first; no routes, so no other alert (a backlog) speaks up
    path = write_config(tmp_path, database_url, routes=[])
    path.write_text(path.read_text() + yaml.safe_dump({"alerts": {"urls": ["${ALERT_URL}"], **alerts}}))
    config = load_config(path, env={**ENV, "ALERT_URL": alert_url})
    store = Store(config.database.url)
    store.upgrade()
    return Runtime(config, store)


def test_a_secret_the_marketplace_stopped_using_alerts_once_and_again_if_it_is_used_again(
        tmp_path, database_url, sink):  # noqa: F811
    runtime = setup(tmp_path, database_url, sink.url)
    with serve_receiver(runtime) as url:
        assert post_webhook(url, leaditio_payload(lead_id="signed_old"), secret=OLD_SECRET).status_code == 200
        assert post_webhook(url, leaditio_payload(lead_id="signed_new"), secret=SECRET).status_code == 200
        alerter = runtime.alerter
        assert alerter.check() == []  # both were just used
        later = time.time() + 49 * HOUR
        alerter.check(now=later)
        alerter.check(now=later + HOUR)  # nothing changed: nothing sent
        assert sink.titles() == ["Webhook secret #2 of leaditio (LEADITIO_WEBHOOK_SECRET_PREVIOUS) can be retired"]
        message = sink.bodies[0]["message"]
        assert "unused for 2.0 d while secret #1 verified webhooks since" in message
        assert "connector status" in message and "/console/secrets" in message
        assert post_webhook(url, leaditio_payload(lead_id="signed_old_again"), secret=OLD_SECRET).status_code == 200
        alerter.check()
        alerter.check()
    assert sink.titles()[1:] == ["Webhook secret #2 of leaditio (LEADITIO_WEBHOOK_SECRET_PREVIOUS) is in use again"]
    assert sink.bodies[1]["type"] == "warning"


def test_a_source_with_one_secret_never_alerts(tmp_path, database_url, sink):  # noqa: F811
    path = write_config(tmp_path, database_url, sources={"leaditio": {"marketplace": "leaditio",
                                                                      "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]}},
                        routes=[])
    path.write_text(path.read_text() + yaml.safe_dump({"alerts": {"urls": ["${ALERT_URL}"]}}))
    config = load_config(path, env={**ENV, "ALERT_URL": sink.url})
    store = Store(config.database.url)
    store.upgrade()
    runtime = Runtime(config, store)
    with serve_receiver(runtime) as url:
        post_webhook(url, leaditio_payload())
    runtime.alerter.check(now=time.time() + 100 * HOUR)
    assert sink.bodies == []


def test_status_shows_each_secret_s_last_use_uses_and_whether_it_is_safe_to_retire(tmp_path, database_url):
    path = write_config(tmp_path, database_url)
    path.write_text(path.read_text() + yaml.safe_dump({"alerts": {"secret_unused_after": "1s"}}))
    runtime = Runtime(load_config(path, env=ENV))
    runtime.store.upgrade()
    with serve_receiver(runtime) as url:
        post_webhook(url, leaditio_payload(lead_id="a"), secret=OLD_SECRET)
        post_webhook(url, leaditio_payload(lead_id="b"), secret=OLD_SECRET)
        time.sleep(1.2)
        post_webhook(url, leaditio_payload(lead_id="c"), secret=SECRET)
    cli = cli_for(path)
    report = json.loads(cli("status", "--json"))
    new, old = report["secrets"]
    assert (new["secret"], new["label"], new["safe_to_retire"]) == (1, "LEADITIO_WEBHOOK_SECRET", False)
    assert (old["secret"], old["label"], old["safe_to_retire"]) == (2, "LEADITIO_WEBHOOK_SECRET_PREVIOUS", True)
    assert old["last_used"] < new["last_used"] and old["uses_in_window"] == 0 and "safe to remove" in old["why"]
    text = cli("status")
    assert "#2 LEADITIO_WEBHOOK_SECRET_PREVIOUS" in text and "safe to retire" in text and "uses in 1 s" in text


def serve_receiver(runtime: Runtime) -> Any:
    from fakes.server import serve

    return serve(create_app(runtime))


# --- the property: over any sequence of uses and time ------------------------------------------------
class ModelStore:
    """The store as the secret alerts see it: alert states (compare and set) and each secret's uses."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.uses: list[tuple[str, int, float]] = []
        self.now = 0.0  # the store's clock (the real one reads time.time())

    def alert_states(self) -> dict[str, str]:
        return dict(self.states)

    def swap_alert_state(self, key: str, old: str | None, new: str) -> bool:
        if self.states.get(key) != old:
            return False
        self.states[key] = new
        return True

    def secret_usage(self, window: float) -> dict[tuple[str, int], SecretUse]:
        now = self.now
        out: dict[tuple[str, int], SecretUse] = {}
        for source, index, at in self.uses:
            old = out.get((source, index))
            out[(source, index)] = SecretUse(source, index, max(at, old.last_used if old else at),
                                             (old.uses_in_window if old else 0) + (at >= now - window))
        return out


steps = st.lists(st.one_of(st.tuples(st.just("wait"), st.floats(min_value=0, max_value=100 * HOUR)),
                           st.tuples(st.just("use"), st.sampled_from([("rotating", 0), ("rotating", 1),
                                                                      ("rotating", 2), ("single", 0)]))),
                 max_size=40)


@settings(max_examples=150, deadline=None)
@given(steps, st.sampled_from([2, 3]))
def test_secret_alerts_follow_the_changes_of_state_once_each(sequence, count):
    store = ModelStore()
    sent: list[Alert] = []
    limit = 48 * HOUR
    alerter = Alerter(store, AlertsConfig(), [], lambda alert: sent.append(alert) or True,  # type: ignore[arg-type]
                      secrets={"rotating": ["A", "B", "C"][:count], "single": ["X"]})
    now = store.now = 1_000_000.0
    for kind, value in sequence:
        if kind == "wait":
            now += value
            store.now = now
        elif value[1] < (count if value[0] == "rotating" else 1):
            store.uses.append((*value, now))
        before = len(sent)
        alerter.check_secrets(store.alert_states(), now)
        assert alerter.check_secrets(store.alert_states(), now) == []  # a second look at the same moment: silence
        for alert in sent[before:]:
            source, number = alert.key.split(":")[1], int(alert.key.split(":")[2])
            assert source == "rotating"  # one secret: nothing to retire
            mine = [at for s, i, at in store.uses if (s, i) == (source, number - 1)]
            others = [at for s, i, at in store.uses if s == source and i != number - 1]
            if alert.state == RETIRE:  # unused for the limit, and the marketplace signs with another since
                assert mine and now - max(mine) >= limit and any(at > max(mine) for at in others)
            else:
                assert mine and now - max(mine) < limit
        # what the store remembers is the truth of this moment
        for index in range(count):
            mine = [at for s, i, at in store.uses if (s, i) == ("rotating", index)]
            others = [at for s, i, at in store.uses if s == "rotating" and i != index]
            safe = bool(mine) and now - max(mine) >= limit and any(at > max(mine) for at in others)
            assert (store.states.get(f"secret:rotating:{index + 1}") == RETIRE) == safe
    # per secret, the alerts alternate: can be retired, in use again, can be retired ...
    for key in {a.key for a in sent}:
        states = [a.state for a in sent if a.key == key]
        assert states[0] == RETIRE and all(a != b for a, b in zip(states, states[1:], strict=False))
