"""The composition root: from the validated config, the parts that run.

`connector.config` is plain data. This module is the one place that turns it into marketplaces,
destinations, mappings, the store and the redactor, and that checks each destination's and
marketplace's own settings (with the file and line of every mistake). The receiver, the worker, the
backfill and the CLI take a `Runtime`, so none of them has to know how a part is built.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from connector import yamlfile
from connector.alerts import Alerter, AppriseSender, known_url
from connector.config import Config, config_path, load_config
from connector.destinations import DESTINATIONS, Destination, DestinationSettings
from connector.errors import ConfigError
from connector.logs import Redactor, install
from connector.mapping import Mapping, load_mapping
from connector.notify import Notifier
from connector.pacing import Budgets
from connector.rotation import labels
from connector.sources import MARKETPLACES, Marketplace
from connector.store import Screen, Store


class MappingCache:
    """Reloads a destination's mapping when its file changes, so a fix resumes delivery by itself."""

    def __init__(self, config: Config, name: str):
        self.config, self.name = config, name
        self._stamp: tuple[float, int] | None = None
        self._result: Mapping | ConfigError | None = None
        self._lock = threading.Lock()  # worker threads share one runtime

    def get(self) -> Mapping:
        dest = self.config.destinations[self.name]
        if not dest.mapping:
            raise ConfigError(f"destination '{self.name}' has no mapping", file=str(self.config.path),
                              key=f"destinations.{self.name}.mapping")
        path = self.config.resolve(dest.mapping)
        with self._lock:
            try:
                stat = os.stat(path)
                stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
            except OSError:
                stamp = None
            if stamp is None or stamp != self._stamp:
                try:
                    self._result = load_mapping(path)
                except ConfigError as exc:
                    self._result = exc
                self._stamp = stamp
            result = self._result
        if isinstance(result, ConfigError):
            raise result
        assert result is not None
        return result


class Runtime:
    """What the config builds. Made once per process (or per test); parts are built on first use."""

    def __init__(self, config: Config, store: Store | None = None):
        self.config = config
        self._destination_settings = check_settings(config)
        # Takes every configured secret (and emails and phones) out of text: see connector.logs.Redactor.
        self.redactor = Redactor(config.secrets)
        install(self.redactor)
        self._mappings = {name: MappingCache(config, name) for name in config.destinations}
        privacy = config.privacy
        self._opt_outs = load_opt_outs(config.resolve(privacy.opt_out_file)) if privacy.opt_out_file else ()
        if store is not None:
            self.store = self._protected(store)

    @cached_property
    def store(self) -> Store:
        return self._protected(Store(self.config.database.url, self.config.server.event_time_tolerance))

    def _protected(self, store: Store) -> Store:
        """The store with the privacy settings: encryption keys, opt-outs, forgotten people refused or not."""
        privacy = self.config.privacy
        store.protect(privacy.key_values(),
                      Screen(opt_outs=self._opt_outs, refuse_forgotten=privacy.after_forget == "refuse"))
        return store

    @cached_property
    def budgets(self) -> Budgets:
        """Every API key's rate budget, kept in the store so all processes share it (connector.pacing)."""
        return Budgets(self.store)

    @cached_property
    def marketplaces(self) -> dict[str, Marketplace]:
        return {name: MARKETPLACES[src.marketplace](name, src, self.budgets) for name, src in self.config.sources.items()}

    @cached_property
    def alerter(self) -> Alerter | None:
        """None when no alert URL is configured; the worker loop asks it to check now and then."""
        urls = self.config.alerts.url_values()
        if not urls:
            return None
        return Alerter(self.store, self.config.alerts, list(self.config.destinations),
                       AppriseSender(urls, self.redactor), secrets=labels(self.config))

    @cached_property
    def notifier(self) -> Notifier | None:
        """None when no route asks for a speed-to-lead notice; the worker hands it what landed."""
        if not any(route.notify for route in self.config.routes):
            return None
        return Notifier(self.config.routes, self.redactor)

    def destination(self, name: str) -> Destination:
        """A new client for destination `name` (each worker thread holds its own)."""
        cls = DESTINATIONS[self.config.destinations[name].type]
        if cls.paced:  # its CRM limits a key, not a process: pace it with the shared budgets
            return cls(name, self._destination_settings[name], budgets=self.budgets)
        return cls(name, self._destination_settings[name])

    def mapping(self, name: str) -> Mapping:
        """Destination `name`'s mapping as its file reads now; a ConfigError names the file and line."""
        return self._mappings[name].get()

    def batch_size(self, name: str) -> int:
        dest = self.config.destinations[name]
        limit = DESTINATIONS[dest.type].max_batch
        return min(dest.batch_size or limit, limit)

    def body_limit(self, source: str) -> int:
        return self.config.sources[source].max_body_bytes or self.config.server.max_body_bytes


def load_opt_outs(path: Path) -> tuple[str, ...]:
    """`privacy.opt_out_file`: one email or phone a line, `#` starts a comment. Kept only until the store
    hashes them with its salt (store/eventlog.py Screen)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="privacy.opt_out_file") from None
    return tuple(line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip())


def load_runtime(path: str | Path | None = None, env: dict[str, str] | None = None) -> Runtime:
    """Read, validate and build: the one call a process makes at start-up (CONNECTOR_CONFIG by default)."""
    return Runtime(load_config(config_path(str(path) if path else None), env=env))


def check_settings(config: Config) -> dict[str, DestinationSettings]:
    """Each destination's and marketplace's own settings, and the routes' names, checked against the file
    so a mistake is `file:line: key: problem`; returns each destination's validated settings."""
    doc = config.document
    for name, dest in config.destinations.items():
        _known(doc, ("destinations", name, "type"), dest.type, DESTINATIONS, "destination type")
    for name, src in config.sources.items():
        _known(doc, ("sources", name, "marketplace"), src.marketplace, MARKETPLACES, "marketplace")
    settings: dict[str, DestinationSettings] = {}
    for name, dest in config.destinations.items():
        cls = DESTINATIONS[dest.type]
        settings[name] = yamlfile.validate(doc, cls.Settings, data=dict(dest.model_extra or {}),
                                           loc_prefix=("destinations", name))
    for name, src in config.sources.items():
        api_model = MARKETPLACES[src.marketplace].ApiSettings
        if src.api is not None and api_model is not None:
            yamlfile.validate(doc, api_model, data=src.api, loc_prefix=("sources", name, "api"))
        if src.reconcile is not None and not MARKETPLACES[src.marketplace].lists_leads:
            raise doc.error(("sources", name, "reconcile"), f"the {src.marketplace} API has no list of delivered "
                            "leads to reconcile with (Leaditio and LeadOS have one): remove reconcile:")
    urls: list[tuple[yamlfile.Loc, str]] = [(("alerts", "urls", i), u.get_secret_value())
                                            for i, u in enumerate(config.alerts.urls)]
    urls += [(("routes", r, "notify", "urls", i), u.get_secret_value())
             for r, route in enumerate(config.routes) if route.notify for i, u in enumerate(route.notify.urls)]
    for loc, value in urls:
        if value and not known_url(value):
            names = doc.variables.get(loc)
            where = f"the URL in {', '.join(names)}" if names else "the URL"
            raise doc.error(loc, f"{where} is not an alert URL Apprise knows (e.g. "
                            "slack://..., msteams://..., mailto://..., tgram://..., json://host/path)")
    return settings


def _known(doc: yamlfile.YamlDocument, loc: yamlfile.Loc, value: str, registry: dict[str, Any], what: str) -> None:
    if value not in registry:
        hint = yamlfile.did_you_mean(value, registry)
        raise doc.error(loc, f"unknown {what} '{value}'{hint} (known: {', '.join(sorted(registry))})")


__all__ = ["MappingCache", "Runtime", "check_settings", "load_runtime"]
