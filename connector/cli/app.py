"""The `connector` command group and what every command shares: the runtime built from the config."""

from __future__ import annotations

import sys
from functools import cached_property
from typing import NoReturn

import click
from rich.console import Console

from connector.config import Config
from connector.errors import ConfigError
from connector.runtime import Runtime, load_runtime
from connector.store import SealError, Store

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


class Context:
    """Loaded on first use, so `--help` works without a config file."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file

    @cached_property
    def runtime(self) -> Runtime:
        try:
            return load_runtime(self.config_file)
        except ConfigError as exc:
            fail(f"configuration problem\n{exc}")

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def store(self) -> Store:
        return self.runtime.store


pass_ctx = click.make_pass_decorator(Context)


class Commands(click.Group):
    """The group; a stored value sealed under a key this process lacks is one clear line, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SealError as exc:
            fail(str(exc), code=1)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", envvar="CONNECTOR_CONFIG", metavar="PATH",
              help="Config file (default: config.yaml; env CONNECTOR_CONFIG).")
@click.version_option(package_name="leads-connector")
@click.pass_context
def main(click_ctx: click.Context, config_file: str | None) -> None:
    """Take leads from lead marketplaces and put them into your CRM."""
    click_ctx.obj = Context(config_file)
