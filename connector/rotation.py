"""Webhook secret rotation: which configured secret is still in use, and which is safe to retire.

While a source has several secrets (a rotation: the new one added, the marketplace not yet switched
everywhere), each webhook records which secret verified it (`events.signature_index`). A secret is
safe to retire when it has verified nothing for `alerts.secret_unused_after` (48 h by default) and
another secret of the source has verified webhooks since its last use: the marketplace has moved on.
Silence alone proves nothing (no leads over a weekend), and a secret no kept event used is not
called safe either: it may be the new one the marketplace does not sign with yet.

`connector status`, the alerts and the console's secrets page all read `signals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connector.config import Config
from connector.errors import ConfigError
from connector.store import SecretUse
from connector.timeutil import duration


@dataclass(frozen=True)
class SecretSignal:
    source: str
    index: int  # 0-based among the source's non-empty secrets, as `events.signature_index`
    label: str  # how the config names it: "LEADITIO_WEBHOOK_SECRET_PREVIOUS" (its variable) or "secret #2"
    last_used: float | None
    recent_uses: int  # within the threshold
    safe_to_retire: bool
    why: str
    in_use: bool = False  # it verified a webhook within the threshold

    @property
    def number(self) -> int:
        """As the logs and `explain` say it: secret #1 is the first in `secrets:`."""
        return self.index + 1

    @property
    def key(self) -> str:
        return f"secret:{self.source}:{self.number}"


def labels(config: Config) -> dict[str, list[str]]:
    """Per source, a name for each non-empty secret: its environment variable when the file names one."""
    try:
        variables = config.document.variables
    except ConfigError:  # a config built in code, not read from a file
        variables = {}
    out: dict[str, list[str]] = {}
    for name, source in config.sources.items():
        found = []
        for position, secret in enumerate(source.secrets):
            if not secret.get_secret_value():
                continue
            named = variables.get(("sources", name, "secrets", position))
            found.append(", ".join(named) if named else f"secret #{len(found) + 1}")
        out[name] = found
    return out


def signals(names: Mapping[str, list[str]], usage: Mapping[tuple[str, int], SecretUse], now: float,
            unused_after: float) -> list[SecretSignal]:
    """One signal per configured secret of every source (`names`: `labels(config)`), in config order."""
    out = []
    for source, secrets in names.items():
        last = {i: (usage[(source, i)].last_used if (source, i) in usage else None) for i in range(len(secrets))}
        for index, label in enumerate(secrets):
            use = usage.get((source, index))
            recent = use.uses_in_window if use else 0
            mine = last[index]
            newer = [j for j, at in last.items() if j != index and at is not None and (mine is None or at > mine)]
            safe = False
            if len(secrets) == 1:
                why = "the only secret of this source"
            elif mine is None:
                why = ("no kept webhook was verified by it: if it is the new secret, the marketplace does not sign "
                       "with it yet (or its uses were pruned)")
            elif now - mine < unused_after:
                why = f"in use: verified {recent} webhook{'s' if recent != 1 else ''} in the last {duration(unused_after)}"
            elif not newer:
                why = (f"unused for {duration(now - mine)}, but no other secret verified a webhook since: keep it "
                       "until one does")
            else:
                safe = True
                why = (f"unused for {duration(now - mine)} while secret #{newer[0] + 1} verified webhooks since: safe "
                       f"to remove from sources.{source}.secrets")
            out.append(SecretSignal(source, index, label, mine, recent, safe, why,
                                    in_use=mine is not None and now - mine < unused_after))
    return out
