"""Each config and mapping mistake an admin makes is reported as `file:line: key: problem`, without a
traceback, by `mappings check` and by `serve` at start-up; a secret's value is never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from tests.conftest import ENV, ROOT, wait_for, write_config


@dataclass
class Mistake:
    name: str
    expected: str  # in the output, with the file name and line where there is one
    config_edit: tuple[str, str] | None = None  # (old, new) in config.yaml's text
    mapping_edit: tuple[str, str] | None = None  # (old, new) in mappings/file.yaml's text
    env: dict[str, str] = field(default_factory=dict)
    raw_config: bytes | None = None  # appended to the config file as bytes
    hidden: str | None = None  # a secret that must not be printed


MISTAKES = [
    Mistake("duplicate routes block", "config.yaml:24: routes: duplicate key (first written at line 21)",
            config_edit=("routes:\n", "routes:\n- source: leaditio\n  destination: leads_file\nroutes:\n")),
    Mistake("mysql database url", "config.yaml:2: database.url: 'mysql' databases are not supported",
            config_edit=("url: sqlite:", "url: mysql://u:p@localhost/leads#")),
    Mistake("garbage database url", "config.yaml:2: database.url: not a database URL",
            config_edit=("url: sqlite:", "url: not a url at all #")),
    Mistake("garbage DATABASE_URL", "DATABASE_URL: not a database URL", env={"DATABASE_URL": "::garbage::"}),
    Mistake("not UTF-8", "config.yaml:24: not UTF-8 text (byte 0xe9 cannot be read)",
            raw_config=b"# caf\xe9\n"),
    Mistake("short webhook secret", "the secret in LEADITIO_WEBHOOK_SECRET is 3 characters long",
            env={"LEADITIO_WEBHOOK_SECRET": "abc"}, hidden="abc"),
    Mistake("webhook secret of spaces", "the secret in LEADITIO_WEBHOOK_SECRET starts or ends with whitespace",
            env={"LEADITIO_WEBHOOK_SECRET": "   "}),
    Mistake("webhook secret with a trailing newline",
            "config.yaml:14: sources.leaditio.secrets[0]: the secret in LEADITIO_WEBHOOK_SECRET starts or ends",
            env={"LEADITIO_WEBHOOK_SECRET": "whsec_copied_with_newline\n"}, hidden="whsec_copied_with_newline"),
    Mistake("duplicate mapping field", "file.yaml:8: fields.first_name: duplicate key (first written at line 6)",
            mapping_edit=("  source: {from: source}\n", "  first_name: {from: first_name}\n")),
    Mistake("unbalanced template brace", "file.yaml:6: fields.source.template: template '{first_name' has an "
            "unbalanced", mapping_edit=("  source: {from: source}", "  source: {template: '{first_name'}")),
    Mistake("bad date format", "file.yaml:6: fields.source.transforms: date format '%Q-%' has '%Q'",
            mapping_edit=("  source: {from: source}", "  source: {from: delivered_at, transforms: [{date: '%Q-%'}]}")),
]


def setup(tmp_path: Path, mistake: Mistake) -> tuple[Path, dict[str, str]]:
    path = write_config(tmp_path, "sqlite:///connector.db")
    if mistake.config_edit:
        old, new = mistake.config_edit
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
    if mistake.raw_config:
        path.write_bytes(path.read_bytes() + mistake.raw_config)
    mapping = tmp_path / "mappings" / "file.yaml"
    if mistake.mapping_edit:
        old, new = mistake.mapping_edit
        assert old in mapping.read_text()
        mapping.write_text(mapping.read_text().replace(old, new, 1))
    return path, {**ENV, **mistake.env}


def check_output(output: str, mistake: Mistake) -> None:
    assert mistake.expected in output, output
    assert "Traceback" not in output
    if mistake.hidden:
        assert mistake.hidden not in output.replace(mistake.expected, "")


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_mappings_check_reports_the_mistake(tmp_path, mistake):
    path, env = setup(tmp_path, mistake)
    result = CliRunner(env={**env, "COLUMNS": "300"}).invoke(main, ["--config", str(path), "mappings", "check"])
    assert result.exit_code != 0
    check_output(result.output, mistake)


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if not m.mapping_edit], ids=lambda m: m.name)
def test_serve_refuses_to_start_on_a_config_mistake(tmp_path, mistake):
    path, env = setup(tmp_path, mistake)
    result = CliRunner(env={**env, "COLUMNS": "300"}).invoke(main, ["--config", str(path), "serve", "--port", "0"])
    assert result.exit_code == 2
    check_output(result.output, mistake)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.mapping_edit], ids=lambda m: m.name)
def test_serve_reports_a_mapping_mistake_at_start_up_and_keeps_receiving(tmp_path, mistake):
    """A broken mapping pauses its destination (the worker retries the file); the receiver still stores leads."""
    path, env = setup(tmp_path, mistake)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector", "--config", str(path), "serve", "--port", "0"],
                                  cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "listening on" in log.read_text(), timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    check_output(log.read_text(), mistake)


def test_a_config_file_with_every_mistake_fixed_passes(tmp_path):
    path, env = setup(tmp_path, Mistake("none", ""))
    result = CliRunner(env=env).invoke(main, ["--config", str(path), "mappings", "check"])
    assert result.exit_code == 0, result.output
