"""Fixtures: a config on a fresh database (SQLite and PostgreSQL), a live receiver, a fake CRM.

Every test that takes `database_url` runs twice: once on SQLite, once on PostgreSQL. PostgreSQL is
not optional: if it is down the tests fail (`.ci/run` starts it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from click.testing import CliRunner

from connector.cli import main
from connector.config import Config, load_config
from connector.runtime import Runtime
from connector.store import Store
from fakes.http_crm import FakeCrm
from fakes.server import serve

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_previous"
ENV = {"LEADITIO_WEBHOOK_SECRET": SECRET, "LEADITIO_WEBHOOK_SECRET_PREVIOUS": OLD_SECRET}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'connector.db'}"
        return
    name = f"connector_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0]
    yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(tmp_path: Path, database_url: str, *, destinations: dict[str, Any] | None = None,
                 routes: list[dict[str, Any]] | None = None, worker: dict[str, Any] | None = None,
                 server: dict[str, Any] | None = None, sources: dict[str, Any] | None = None) -> Path:
    """A config file in tmp_path with the repo's mappings copied beside it."""
    mappings = tmp_path / "mappings"
    if not mappings.exists():
        shutil.copytree(ROOT / "mappings", mappings)
    document = {
        "database": {"url": database_url},
        "server": server or {},
        "worker": {"poll_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.2, "config_retry": 0.2,
                   "lease": 30, **(worker or {})},
        "sources": sources or {"leaditio": {"marketplace": "leaditio",
                                            "secrets": ["${LEADITIO_WEBHOOK_SECRET}",
                                                        "${LEADITIO_WEBHOOK_SECRET_PREVIOUS:-}"]}},
        "destinations": destinations or {"leads_file": {"type": "file", "path": str(tmp_path / "leads.jsonl"),
                                                        "mapping": "mappings/file.yaml"}},
        "routes": routes if routes is not None else [{"source": "leaditio", "destination": "leads_file"}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def make_config(tmp_path: Path, database_url: str, **kw: Any) -> Config:
    return load_config(write_config(tmp_path, database_url, **kw), env=ENV)


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    return make_config(tmp_path, database_url)


@pytest.fixture
def store(config: Config) -> Any:
    store = Store(config.database.url)
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def receiver(config: Config, store: Store) -> Any:
    """The real Flask receiver over real HTTP; yields its base URL."""
    from connector.web import create_app

    with serve(create_app(Runtime(config, store))) as url:
        yield url


@pytest.fixture
def fake_crm() -> Any:
    crm = FakeCrm()
    with serve(crm.app) as url:
        crm.url = f"{url}/leads"
        yield crm


def cli_for(path: Path) -> Any:
    """`connector --config path ARGS...` run in-process: returns its output and checks its exit code (`code=`)."""
    runner = CliRunner(env={**ENV, "COLUMNS": "250"})

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return cli


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def leaditio_payload(lead_id: str = "lead_abc123", event: str = "lead.new", timestamp: str = "2026-05-20T10:23:44Z",
                     **lead: Any) -> dict[str, Any]:
    """The documented webhook example, with overrides."""
    base = {
        "id": lead_id, "vertical": "solar", "sub_vertical": "installation", "first_name": "Thabo",
        "suburb": "Sandton", "province": "Gauteng", "score": 87, "score_tier": "hot",
        "service_type": "Solar Installation 10kW+", "budget_range": "R100,000–R150,000", "urgency": "asap",
        "delivered_at": "2026-05-20T10:23:48Z",
    }
    base.update(lead)
    return {"event": event, "timestamp": timestamp, "lead": base,
            "contact": {"phone": "+27823456789", "email": "thabo.m@gmail.com"}}


def post_webhook(url: str, payload: dict[str, Any] | bytes, *, secret: str | None = SECRET,
                 source: str = "leaditio", headers: dict[str, str] | None = None) -> requests.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        sent["X-Leaditio-Signature"] = sign(body, secret)
    return requests.post(f"{url}/webhooks/{source}", data=body, headers=sent, timeout=10)


def read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["lead_key"]: row for row in rows}


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


class AlertSink:
    """An alert channel's webhook (Apprise's json:// posts there): records the JSON body of every alert Apprise posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(json.loads(environ["wsgi.input"].read(size)))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    def titles(self) -> list[str]:
        return [body["title"] for body in self.bodies]


@pytest.fixture
def sink() -> Any:
    sink = AlertSink()
    with serve(sink.app, quiet=True) as url:
        sink.url = url.replace("http://", "json://") + "/hooks/alerts"
        yield sink
