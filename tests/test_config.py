"""The config file: interpolation, secrets from env only, and mistakes explained with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.config import database_url, load_config
from connector.config import json_schema as config_json_schema
from connector.errors import ConfigError
from connector.runtime import load_runtime

ROOT = Path(__file__).resolve().parent.parent
ENV = {"LEADITIO_WEBHOOK_SECRET": "whsec_config_test_0001"}


def test_example_config_loads():
    config = load_config(ROOT / "config.example.yaml", env=ENV)
    assert config.sources["leaditio"].secret_values() == [ENV["LEADITIO_WEBHOOK_SECRET"]]
    assert config.database.url.startswith("sqlite:////")  # made absolute, beside the config
    assert config.worker.retry_horizon == 3 * 86400 and config.worker.lease == 120


@pytest.mark.parametrize(("raw", "expected"), [
    ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
    ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_database_url_schemes(raw, expected):
    assert database_url(raw) == expected


def test_database_url_env_wins():
    config = load_config(ROOT / "config.example.yaml", env={**ENV, "DATABASE_URL": "postgres://u@db/x"})
    assert config.database.url == "postgresql+psycopg://u@db/x"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "c.yaml").write_text(text)
    return tmp_path / "c.yaml"


BASE = """sources:
  leaditio:
    marketplace: leaditio
    secrets: ["${LEADITIO_WEBHOOK_SECRET}"]
destinations:
  out: {type: file, path: x.jsonl, mapping: m.yaml}
routes:
  - {source: leaditio, destination: out}
"""


@pytest.mark.parametrize(("text", "line", "words"), [
    (BASE.replace("${LEADITIO_WEBHOOK_SECRET}", "${NOT_SET_ANYWHERE}"), 4,
     "environment variable NOT_SET_ANYWHERE is not set"),
    (BASE.replace('["${LEADITIO_WEBHOOK_SECRET}"]', '["hunter2"]'), 4,
     "secrets must come from environment variables"),
    (BASE.replace("marketplace: leaditio", "marketplace: leaditoi"), 3, "did you mean 'leaditio'"),
    (BASE.replace("type: file", "type: fiel"), 6, "did you mean 'file'"),
    (BASE.replace("destination: out}", "destination: outt}"), 8, "no destination named 'outt', did you mean 'out'"),
    (BASE.replace("path: x.jsonl", "pth: x.jsonl"), 6, "unknown key 'pth'"),
    (BASE + "worker:\n  threads: many\n", 10, "worker.threads"),
    (BASE + "worker:\n  retry_horizon: forever\n", 10, "not a duration"),
    (BASE + "wroker: {}\n", 9, "did you mean 'worker'"),
])
def test_config_mistakes(tmp_path, text, line, words):
    with pytest.raises(ConfigError) as caught:
        load_runtime(write(tmp_path, text), env=ENV)  # the runtime checks each kind's own settings too
    message = str(caught.value)
    assert f"c.yaml:{line}" in message, message
    assert words in message, message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", env=ENV)


def test_config_schema_file_is_current_and_the_example_points_at_it():
    committed = json.loads((ROOT / "config.schema.json").read_text())
    assert committed == json.loads(json.dumps(config_json_schema())), \
        "run: connector mappings schema --config-file --write"
    assert (ROOT / "config.example.yaml").read_text().startswith(
        "# yaml-language-server: $schema=./config.schema.json\n")
    worker = committed["$defs"]["WorkerConfig"]["properties"]
    assert all(field.get("description") for field in worker.values())
