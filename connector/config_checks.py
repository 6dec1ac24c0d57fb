"""The checks `load_config` makes across the config file once it is valid data: names that refer to other
sections, secrets too short or with stray whitespace, a database we cannot open, privacy keys Fernet
cannot use. Each mistake names the file, line and key (or the variable, never a secret's value).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connector import yamlfile
from connector.errors import ConfigError


class Source(Protocol):
    """A configured source, as far as these checks read it (connector.config.SourceConfig)."""

    secrets: list[SecretStr]

    def secret_values(self) -> list[str]: ...


class Route(Protocol):
    source: str
    destination: str

MIN_SECRET_LENGTH = 16
MIN_CONSOLE_PASSWORD = 12
_DATABASES = {"sqlite": "sqlite", "postgresql": "psycopg"}  # SQLAlchemy backend -> the driver we ship


def check_privacy(doc: yamlfile.YamlDocument, encryption_keys: Sequence[SecretStr], erase: Iterable[str],
                  destinations: Collection[str]) -> None:
    """Encryption keys that Fernet cannot use, and erasure settings for destinations that do not exist."""
    from cryptography.fernet import (
        Fernet,  # only when a key is set: the webhook path never needs it otherwise
    )

    for index, key in enumerate(encryption_keys):
        value = key.get_secret_value()
        if not value:
            continue
        try:
            Fernet(value.encode())
        except (ValueError, TypeError):
            names = doc.variables.get(("privacy", "encryption_keys", index))
            where = f"the key in {', '.join(names)}" if names else "the key"
            raise doc.error(("privacy", "encryption_keys", index),
                            f"{where} is not a Fernet key (32 url-safe base64-encoded bytes); make one with "
                            "`connector db new-key`") from None
    for name in erase:
        if name not in destinations:
            raise doc.error(("privacy", "erase", name), f"no destination named '{name}'"
                            f"{yamlfile.did_you_mean(name, destinations)}")


def check_references(doc: yamlfile.YamlDocument, *, console_password: str | None, password_env: str,
                     sources: Mapping[str, Source], destinations: Collection[str], routes: Sequence[Route]) -> None:
    """Secrets and route names; each kind's own settings are checked by connector.runtime."""
    if console_password and len(console_password) < MIN_CONSOLE_PASSWORD:
        raise doc.error(("console", "password_env"), f"the password in {password_env} is "
                        f"{len(console_password)} characters long; the console needs at least {MIN_CONSOLE_PASSWORD} "
                        "(or unset it to keep the console off)")
    for name, src in sources.items():
        if not src.secret_values():
            raise doc.error(("sources", name, "secrets"),
                            "needs at least one webhook secret, e.g. - ${LEADITIO_WEBHOOK_SECRET}")
        for index, secret in enumerate(src.secrets):
            check_webhook_secret(doc, ("sources", name, "secrets", index), secret.get_secret_value())
    for index, route in enumerate(routes):
        if route.source not in sources:
            raise doc.error(("routes", index, "source"), f"no source named '{route.source}'"
                            f"{yamlfile.did_you_mean(route.source, sources)}")
        if route.destination not in destinations:
            raise doc.error(("routes", index, "destination"), f"no destination named '{route.destination}'"
                            f"{yamlfile.did_you_mean(route.destination, destinations)}")


def check_webhook_secret(doc: yamlfile.YamlDocument, loc: yamlfile.Loc, value: str) -> None:
    """A short secret can be guessed; whitespace around one (a trailing newline pasted into the
    variable) makes every correctly signed webhook fail. The message names the variable, never the value."""
    if not value:  # an optional variable left empty, e.g. the previous secret once rotation is over
        return
    names = doc.variables.get(loc)
    where = f"the secret in {', '.join(names)}" if names else "the secret"
    if value != value.strip():
        raise doc.error(loc, f"{where} starts or ends with whitespace (a pasted newline?): the marketplace "
                             "signs without it, so every webhook would be refused; set it again without")
    if len(value) < MIN_SECRET_LENGTH:
        raise doc.error(loc, f"{where} is {len(value)} characters long; a webhook secret needs at least "
                             f"{MIN_SECRET_LENGTH} (use the one the marketplace generated)")


def check_database_url(doc: yamlfile.YamlDocument, url: str, from_env: bool) -> None:
    """Only SQLite and PostgreSQL are supported; say so before SQLAlchemy fails with a traceback."""
    def problem(message: str) -> ConfigError:
        if from_env:
            return ConfigError(f"DATABASE_URL: {message}")
        return doc.error(("database", "url"), message)

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise problem("not a database URL; write sqlite:///connector.db or "
                      "postgresql://user:password@host:5432/name") from None
    backend = parsed.get_backend_name()
    if backend not in _DATABASES:
        raise problem(f"'{backend}' databases are not supported: use sqlite:///... or postgresql://...")
    if parsed.get_driver_name() not in (_DATABASES[backend], "pysqlite"):
        raise problem(f"the {parsed.get_driver_name()} driver is not installed: write {backend}://... "
                      "and the connector picks its driver")
