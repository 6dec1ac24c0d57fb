"""The connector's config file: sources, destinations, routes between them, and runtime knobs.

Plain validated data: nothing here builds a marketplace, a destination or a mapping (that is
`connector.runtime`, which also checks each kind's own settings). Loaded once at start-up; any mistake
stops start-up with the file, line, key path and problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from connector import config_checks, yamlfile
from connector.config_checks import MIN_SECRET_LENGTH
from connector.durations import DURATION, seconds
from connector.errors import ConfigError
from connector.lead import get_path
from connector.privacy.settings import PrivacyConfig

DEFAULT_CONFIG = "config.yaml"
# Variables read by default when the file names none (e.g. LEADITIO_API_KEY): their values are secret too.
_SECRET_VARIABLE = re.compile(r"(SECRET|TOKEN|PASSWORD|API_KEY|PRIVATE_KEY)S?(_[A-Z0-9]+)?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReconcileConfig(Strict):
    every: float = Field(default=900, gt=0, description="how often the worker compares the marketplace's "
                                                          "delivered leads with what arrived")
    window: float = Field(default=2 * 86400, gt=0, description="how far back each run looks (leads delivered "
                                                                "within this much time)")
    grace: float = Field(default=120, ge=0, description="leads delivered less than this long ago are left to "
                                                        "their webhook, which may still be on its way")

    @field_validator("every", "window", "grace", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)


class SourceConfig(Strict):
    marketplace: str = Field(description="leaditio, leados or leadnod")
    secrets: list[SecretStr] = Field(default_factory=list,
                                     description="webhook secrets; several while rotating")
    max_body_bytes: int | None = Field(default=None, gt=0, description="overrides server.max_body_bytes")
    events: list[str] | None = Field(default=None, description="event types to register webhooks for")
    api: dict[str, Any] | None = Field(default=None, description="the marketplace API (backfill, stats)")
    reconcile: ReconcileConfig | None = Field(default=None, description="the worker checks on a schedule "
                                              "that every lead the marketplace delivered arrived, and fetches any "
                                              "that did not (needs the marketplace's API: Leaditio, LeadOS)")

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in self.secrets if s.get_secret_value()]


class DestinationConfig(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest is the kind's own settings, checked below

    type: str = Field(description="file, http, hubspot or salesforce; the rest of the block is that kind's "
                                  "own settings (see the README)")
    mapping: str | None = Field(default=None, description="path of the YAML field mapping")
    batch_size: int | None = Field(default=None, gt=0, description="records per CRM call (capped at the CRM's limit)")


class NotifyConfig(Strict):
    """A speed-to-lead notice: a short message to the team's channel when a lead of this route lands in the CRM."""

    urls: list[SecretStr] = Field(min_length=1,
                                  description="where notices go, as Apprise URLs from the environment, e.g. "
                                              "- ${SALES_CHANNEL_URL} (slack://, msteams://, mailto://, tgram://, "
                                              "json:// for any webhook)")
    phone: bool = Field(default=False, description="include the lead's phone number (personal data: only for a "
                                                   "channel where every reader may see it)")
    email: bool = Field(default=False, description="include the lead's email address (personal data, as phone)")
    max_age: float = Field(default=86400, gt=0,
                           description="no notice for a lead the marketplace delivered longer ago than this (a "
                                       "backfill of old leads would flood the channel); its speed is still recorded")

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    def url_values(self) -> list[str]:
        return [u.get_secret_value() for u in self.urls if u.get_secret_value()]


class RouteConfig(Strict):
    source: str = Field(description="a name under sources:")
    destination: str = Field(description="a name under destinations:")
    events: list[str] | None = Field(default=None, description="only these event types")
    where: dict[str, Any] = Field(default_factory=dict,
                                  description="lead field path -> value or list of values")
    notify: NotifyConfig | None = Field(default=None,
                                        description="a speed-to-lead notice to a channel when a lead of this "
                                                    "route first lands in the CRM (its link, tier, vertical, "
                                                    "suburb)")

    def accepts(self, event_type: str, lead: dict[str, Any]) -> bool:
        if self.events is not None and event_type not in self.events:
            return False
        for path, wanted in self.where.items():
            value = get_path(lead, path)
            choices = wanted if isinstance(wanted, list) else [wanted]
            if value not in choices and str(value) not in [str(c) for c in choices]:
                return False
        return True


DURATIONS = ("lease", "retry_horizon", "backoff_base", "backoff_max", "config_retry", "poll_interval", "prune_every")


class WorkerConfig(Strict):
    threads: int = Field(default=2, ge=1, le=64, description="delivery threads per worker process")
    poll_interval: float = Field(default=0.5, gt=0, description="how often an idle worker looks for due deliveries")
    instant_wakeup: bool = Field(default=True,
                                 description="wake idle workers the moment a lead is stored (PostgreSQL: LISTEN/NOTIFY; "
                                             "`serve`: directly) rather than at the next poll; false: poll only "
                                             "(e.g. behind PgBouncer in transaction mode, where LISTEN hears nothing)")
    lease: float = Field(default=120, description="seconds a claimed batch is ours before another worker may take it")
    retry_horizon: float = Field(default=3 * 86400, description="keep retrying transient failures this long")
    backoff_base: float = Field(default=5, gt=0, description="first retry after about this long, then doubling")
    backoff_max: float = Field(default=3600, gt=0, description="never wait longer than this between two tries")
    config_retry: float = Field(default=60, gt=0, description="how often a paused destination is tried again")
    prune_every: float | None = Field(default=86400, gt=0,
                                      description="how often the worker runs `db prune` (events older than "
                                                  "server.dedupe_days); null: never (run it yourself)")
    breaker_threshold: int = Field(default=5, ge=1,
                                   description="transient failures in a row (5xx, timeouts) after which a destination "
                                               "is paused and probed with one delivery at a time until it answers")

    @field_validator(*DURATIONS, mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else seconds(value)


class ServerConfig(Strict):
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="larger webhook bodies are refused with 413")
    metrics_token: SecretStr | None = Field(default=None, description="${VAR}: require `Authorization: Bearer "
                                                                      "<token>` on /metrics")
    dedupe_days: int = Field(default=30, ge=7, description="how long delivered events are remembered")
    event_time_tolerance: float = Field(default=300, ge=0,
                                        description="an event time further ahead of its receipt than this (a wrong "
                                                    "clock) counts as the receipt time, so it cannot freeze a lead")

    @field_validator("event_time_tolerance", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)


class AlertsConfig(Strict):
    urls: list[SecretStr] = Field(default_factory=list,
                                  description="where alerts go, as Apprise URLs from the environment, e.g. "
                                              "- ${SLACK_ALERT_URL} (slack://, msteams://, mailto://, tgram://, "
                                              "json:// for any webhook); none: no alerts")
    dead_letter_interval: float = Field(default=900, gt=0,
                                        description="new dead letters are sent as one alert per this interval, "
                                                    "counted by error code")
    oldest_pending_after: float = Field(default=1800, gt=0,
                                        description="alert when a destination's oldest pending lead has waited "
                                                    "longer than this (and again when it no longer has)")
    failing_after: int = Field(default=3, ge=1,
                               description="failed tries in a row before a destination counts as failing "
                                           "(a pause counts at once)")
    check_interval: float = Field(default=30, gt=0,
                                  description="how often a worker process looks at the store for alerts")
    secret_unused_after: float = Field(default=48 * 3600, gt=0,
                                       description="while a source has several webhook secrets (a rotation), "
                                                   "one unused this long, with another used since, is safe to "
                                                   "retire: alerted, and shown by `status`")

    @field_validator("dead_letter_interval", "oldest_pending_after", "check_interval", "secret_unused_after",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    def url_values(self) -> list[str]:
        return [u.get_secret_value() for u in self.urls if u.get_secret_value()]


class ConsoleConfig(Strict):
    """The operators' web console at /console: off until a password is set in the environment."""

    password_env: str = Field(default="CONNECTOR_CONSOLE_PASSWORD",
                              description="the environment variable holding the console's password; unset or "
                                          "empty: the console is off (every /console page answers 404)")
    secret_key_env: str = Field(default="CONNECTOR_CONSOLE_SECRET_KEY",
                                description="the environment variable holding the key that signs session cookies "
                                            "and CSRF tokens; unset: a random key made once and kept in the database")
    secure_cookie: bool | None = Field(default=None,
                                       description="mark the session cookie Secure; unset: when the request came "
                                                   "over HTTPS (as gunicorn's forwarded_allow_ips tells it)")
    session_lifetime: float = Field(default=12 * 3600, gt=0, description="a login lasts this long")
    trusted_proxies: int = Field(default=0, ge=0, le=5,
                                 description="proxies in front that append to X-Forwarded-For (Heroku's router: 1); "
                                             "the lockout counts failures per client address read this way")
    lockout_failures: int = Field(default=5, ge=1,
                                  description="wrong passwords from one client within lockout_window before it "
                                              "is locked out")
    lockout_global_failures: int = Field(default=50, ge=1,
                                         description="wrong passwords from all clients together within "
                                                     "lockout_window before every login is refused")
    lockout_window: float = Field(default=900, gt=0, description="how long failures are counted for")
    lockout_duration: float = Field(default=900, gt=0, description="how long a lockout lasts")

    _password: str = PrivateAttr(default="")
    _secret_key: str = PrivateAttr(default="")

    @field_validator("session_lifetime", "lockout_window", "lockout_duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    @property
    def password(self) -> str:
        """Read from `password_env` when the config is loaded; empty: the console is off."""
        return self._password

    @property
    def secret_key(self) -> str:
        return self._secret_key

    def read_environment(self, env: Any) -> list[str]:
        """Take the password and key from the environment; returns them (secrets for the redactor)."""
        self._password = env.get(self.password_env, "") or ""
        self._secret_key = env.get(self.secret_key_env, "") or ""
        return [value for value in (self._password, self._secret_key) if value]


class DatabaseConfig(Strict):
    url: str = Field(default="sqlite:///connector.db",
                     description="sqlite:///file.db or postgresql://...; DATABASE_URL overrides it")


class Config(Strict):
    """The connector's config file (config.yaml)."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig, description="where events are stored")
    server: ServerConfig = Field(default_factory=ServerConfig, description="the webhook receiver")
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="delivery to destinations")
    sources: dict[str, SourceConfig] = Field(description="name -> marketplace; webhooks arrive at "
                                                         "POST /webhooks/<name>")
    destinations: dict[str, DestinationConfig] = Field(description="name -> a CRM or file leads go to")
    routes: list[RouteConfig] = Field(default_factory=list, description="which source's leads go to which "
                                                                        "destination")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="messages to the team's channels "
                                                                          "when something needs a person")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, description="the operators' web console at "
                                                                             "/console (docs/operations.md)")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig,
                                   description="personal information: retention, erasure, opt-outs, encryption "
                                               "(docs/privacy.md)")

    path: Path | None = Field(default=None, exclude=True)
    # The file as read, so that later checks (connector.runtime) can name the line of a mistake.
    _document: yamlfile.YamlDocument | None = PrivateAttr(default=None)
    # Every secret the file holds or names: the runtime's redactor takes them out of logs and answers.
    _secrets: list[str] = PrivateAttr(default_factory=list)

    @property
    def document(self) -> yamlfile.YamlDocument:
        if self._document is None:
            raise ConfigError("this config was not read from a file")
        return self._document

    @property
    def secrets(self) -> list[str]:
        return self._secrets

    def body_limit(self, source: str) -> int:
        return self.sources[source].max_body_bytes or self.server.max_body_bytes

    def resolve(self, relative: str) -> Path:
        """Paths in the config are relative to the config file's folder."""
        path = Path(relative)
        if path.is_absolute() or self.path is None:
            return path
        return self.path.parent / path

    def routes_for(self, source: str) -> list[RouteConfig]:
        return [r for r in self.routes if r.source == source]


def json_schema() -> dict[str, Any]:
    """config.schema.json: the same models that validate the file, for editors (autocomplete, hover help)."""
    schema = Config.model_json_schema()
    schema["properties"].pop("path", None)
    written_as_durations(schema, "WorkerConfig", DURATIONS)
    written_as_durations(schema, "WorkerConfig", ["prune_every"], nullable=True)
    written_as_durations(schema, "ReconcileConfig", ["every", "window", "grace"], minimum="minimum")
    written_as_durations(schema, "AlertsConfig", ["dead_letter_interval", "oldest_pending_after", "check_interval",
                                                  "secret_unused_after"])
    written_as_durations(schema, "NotifyConfig", ["max_age"])
    written_as_durations(schema, "ConsoleConfig", ["session_lifetime", "lockout_window", "lockout_duration"])
    written_as_durations(schema, "PrivacyConfig", ["keep_personal_data", "keep_dead_letters"])
    schema["title"] = "Lead connector configuration"
    return schema


def written_as_durations(schema: dict[str, Any], model: str, names: Sequence[str], *,
                         minimum: str = "exclusiveMinimum", nullable: bool = False) -> None:
    """Settings validated as seconds but written as 30s, 15m, 3d: the schema must take both forms."""
    properties = schema["$defs"][model]["properties"]
    for name in names:
        kept = {key: value for key, value in properties[name].items()
                if key not in ("type", "exclusiveMinimum", "minimum", "anyOf")}
        kept["anyOf"] = [{"type": "number", minimum: 0}, {"type": "string", "pattern": DURATION.pattern},
                         *([{"type": "null"}] if nullable else [])]
        properties[name] = kept


def database_url(raw: str) -> str:
    """Heroku's `postgres://` and plain `postgresql://` -> the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix):]
    return raw


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("CONNECTOR_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    env_map = os.environ if env is None else env
    doc = yamlfile.load_yaml(config_path(str(path) if path else None))
    yamlfile.interpolate(doc, env_map)
    if not isinstance(doc.data, dict):
        raise doc.error((), "the config file must be a mapping with sources, destinations and routes")
    config = yamlfile.validate(doc, Config)
    config.path = doc.path.resolve()
    config._document = doc
    notify_urls = [url for route in config.routes if route.notify for url in route.notify.url_values()]
    config._secrets = (secret_values(doc, env_map) + alert_url_secrets(config.alerts.url_values() + notify_urls)
                       + config.console.read_environment(env_map) + config.privacy.key_values())
    from_env = bool(env_map.get("DATABASE_URL"))
    if from_env:
        config.database.url = env_map["DATABASE_URL"]
    config.database.url = database_url(config.database.url)
    config_checks.check_database_url(doc, config.database.url, from_env)
    if config.database.url.startswith("sqlite:///") and not config.database.url.startswith("sqlite:////"):
        relative = config.database.url[len("sqlite:///"):]
        if relative and relative != ":memory:":
            config.database.url = "sqlite:///" + str(config.resolve(relative))
    config_checks.check_references(doc, console_password=config.console.password,
                                   password_env=config.console.password_env, sources=config.sources,
                                   destinations=config.destinations, routes=config.routes)
    config_checks.check_privacy(doc, config.privacy.encryption_keys, config.privacy.erase, config.destinations)
    return config


def alert_url_secrets(urls: list[str]) -> list[str]:
    """An alert URL is a credential (a Slack webhook's path, a mail password): the whole URL and each of
    its long parts, which a library may log on their own."""
    parts = [part for url in urls for part in re.split(r"[/:@?&=]", url) if len(part) >= MIN_SECRET_LENGTH]
    return urls + parts


def secret_values(doc: yamlfile.YamlDocument, env: Any) -> list[str]:
    """Every secret the config holds: values under secret keys, and variables with secret-like names
    (read by default, e.g. LEADITIO_API_KEY). Private keys also by line, as a PEM may be logged in parts."""
    found: list[str] = []

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, secret or yamlfile.is_secret_key(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, secret)
        elif secret and isinstance(value, str):
            found.append(value)

    walk(doc.data, False)
    found.extend(value for name, value in env.items() if _SECRET_VARIABLE.search(name))
    lines = [line.strip() for value in found for line in value.replace("\\n", "\n").splitlines()]
    return found + [line for line in lines if len(line) >= MIN_SECRET_LENGTH and not line.startswith("-----")]
