"""Console pages about the connector as a whole: destinations now, webhook secrets, backfill runs.

Each page reads the store through the same calls `connector status` and `connector backfill` use;
every text that came from a CRM or a config passes the redactor before it is shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, render_template, url_for

from connector.store.schema import DEAD, PENDING
from connector.timeutil import duration, iso
from connector.web.console import bp, runtime

SECRET_WINDOW = 48 * 3600  # "uses in 48 h"; unused that long with another secret in use: safe to retire


@dataclass
class DestinationNow:
    name: str
    kind: str
    state: str  # ok / failing / paused
    pending: int
    dead: int
    delivered: int
    oldest_pending_age: float | None
    failing_since: float | None
    last_error: str | None
    paused_until: float | None
    pause_kind: str | None
    pause_reason: str | None


def destinations_now() -> list[DestinationNow]:
    rt = runtime()
    status = rt.store.status()
    now = time.time()
    out = []
    for name, dest in rt.config.destinations.items():
        counts = status["destinations"].get(name, {})
        health = status["health"].get(name) or {}
        pause = status["pauses"].get(name)
        paused = pause is not None and pause["until"] > now
        state = "paused" if paused else "failing" if health else "ok"
        out.append(DestinationNow(
            name, dest.type, state, counts.get(PENDING, 0), counts.get(DEAD, 0), counts.get("delivered", 0),
            counts.get("oldest_pending_age"), health.get("failing_since"),
            rt.redactor(health["last_error"]) if health.get("last_error") else None,
            pause["until"] if paused else None, pause["kind"] if paused else None,
            rt.redactor(pause["reason"]) if paused else None))
    return out


def speed_to_lead() -> dict[str, str]:
    """Per destination, in words, how fast new leads of the last 24 h reached the CRM after the
    marketplace delivered them (median and p90 per source; the worker records it per delivery)."""
    out: dict[str, list[str]] = {}
    for route in runtime().store.speed_by_route():
        out.setdefault(route.destination, []).append(
            f"{route.source}: median {duration(route.median)}, p90 {duration(route.p90)} ({route.leads} lead{'' if route.leads == 1 else 's'})")
    return {name: "; ".join(parts) for name, parts in out.items()}


@bp.get("/destinations")
def destinations() -> Any:
    return render_template("console/destinations.html", rows=destinations_now(), speed=speed_to_lead())


@bp.post("/destinations/<name>/resume")
def resume(name: str) -> Any:
    if name not in runtime().config.destinations:
        abort(404)
    runtime().store.unpause(name)
    flash(f"{name} resumed: its deliveries are due again.")
    return redirect(url_for("console.destinations"))


@dataclass
class SecretRow:
    source: str
    number: int  # 1-based, as in `explain` ("secret #1")
    variable: str  # the environment variable it comes from, never its value
    configured: bool
    last_used: float | None
    uses: int
    safe_to_retire: bool


def secret_rows() -> list[SecretRow]:
    rt = runtime()
    usage = rt.store.secret_usage(SECRET_WINDOW)
    rows = []
    for source, config in rt.config.sources.items():
        values = [s.get_secret_value() for s in config.secrets]
        in_use = sum(1 for i, value in enumerate(values) if value and _uses(usage, source, i))
        for index, value in enumerate(values):
            names = rt.config.document.variables.get(("sources", source, "secrets", index)) \
                if rt.config.path else None
            use = usage.get((source, index))
            uses = use.uses_in_window if use else 0
            # Retire one only while another set secret still verifies webhooks: never the last one in use.
            safe = bool(value) and uses == 0 and sum(1 for v in values if v) > 1 and in_use > 0
            rows.append(SecretRow(source, index + 1, ", ".join(names or []) or "(in the file)", bool(value),
                                  use.last_used if use else None, uses, safe))
    return rows


def _uses(usage: dict[tuple[str, int], Any], source: str, index: int) -> int:
    use = usage.get((source, index))
    return use.uses_in_window if use else 0


@bp.get("/secrets")
def secrets() -> Any:
    return render_template("console/secrets.html", rows=secret_rows(), window=SECRET_WINDOW)


@dataclass
class Run:
    kind: str  # backfill or reconcile
    source: str
    name: str
    what: str  # filters and destinations, in words
    done: bool
    progress: str  # "120 of 400 (30%)"
    percent: int | None
    counts: dict[str, int]
    started_at: float | None
    updated_at: float
    state: str | None = None  # said in words when "finished"/"unfinished" is not the whole story


def backfill_runs() -> list[Run]:
    """Every backfill checkpoint: where each run got to (`connector backfill` writes them page by page)."""
    runs = []
    for saved in runtime().store.checkpoints():
        state, params = saved["state"], saved["params"]
        total, done_in_pass = state.get("total"), int(state.get("done_in_pass") or 0)
        percent = 100 if saved["done"] else (min(100, int(100 * done_in_pass / total)) if total else None)
        progress = f"{done_in_pass} of {total if total is not None else '?'}" + (
            f" ({percent}%)" if percent is not None else "") + f", pass {state.get('pass', 1)}"
        filters = ", ".join(f"{k}={v}" for k, v in (params.get("filters") or {}).items()) or "all leads"
        dests = ", ".join(params.get("destinations") or []) or "the source's routes"
        counts = {k: v for k, v in (state.get("counts") or {}).items() if v}
        runs.append(Run("backfill", saved["source"], saved["job_key"], f"{filters} to {dests}", saved["done"],
                        progress, percent, counts, state.get("started_at"), saved["updated_at"]))
    return runs


def reconcile_runs() -> list[Run]:
    """The newest reconcile runs (`connector reconcile` and the worker's schedule record each one)."""
    redact = runtime().redactor
    runs = []
    for run in runtime().store.reconcile_runs(limit=20):
        finished = run["state"] != "running"
        window = f"leads delivered {iso(run['window_from'])} to {iso(run['window_to'])}"
        said = redact(run["error"] or run["summary"] or "") if finished else "running"
        runs.append(Run("reconcile", run["source"], run["trigger"], window, finished,
                        f"{run['listed']} listed, {run['missing']} never received, {run['recovered']} recovered",
                        100 if finished else None,
                        {k: run[k] for k in ("listed", "missing", "recovered") if run[k]},
                        run["started_at"], run["finished_at"] or run["started_at"], f"{run['state']}: {said}"))
    return runs


@bp.get("/runs")
def runs() -> Any:
    return render_template("console/runs.html", backfills=backfill_runs(), reconciles=reconcile_runs())
