"""Who may see the console: one password from the environment, a signed session, CSRF, lockouts.

- Every console request passes `_guard` first: console off (no password) -> 404; not logged in ->
  a GET is sent to the login page, anything else is refused with 403; a POST without the session's
  CSRF token is refused with 400. Only the login page and the stylesheet are open.
- The password is compared in constant time (HMAC digests of both, so not even its length shows).
- Wrong passwords are counted in the database per client address and over all clients
  (store/logins.py): past `console.lockout_failures` (one client) or `lockout_global_failures` (all)
  within `lockout_window`, logins are refused for `lockout_duration` without comparing the password,
  in every gunicorn worker and after a restart.
- The session holds a fingerprint of the password: changing the password logs everyone out.

CSRF tokens are Flask-WTF's (`generate_csrf`/`validate_csrf`: signed, time-limited, bound to the
session), called from this blueprint only, rather than `CSRFProtect` over the whole app, which would
also guard the marketplaces' webhook POSTs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session, url_for
from flask.sessions import NullSession
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms import ValidationError

from connector.store.logins import EVERYONE, Limit
from connector.web.console import PREFIX, bp, runtime

log = logging.getLogger("connector.console")
OPEN = {"console.login", "console.static"}
SESSION_KEY = "console"


def _fingerprint(password: str) -> str:
    """Keyed by the signing key: the cookie is signed, not encrypted, so it must not give the password away."""
    return hmac.new(str(current_app.secret_key).encode(), b"console-login|" + password.encode(),
                    hashlib.sha256).hexdigest()


def _same(given: str, password: str) -> bool:
    """Constant time, whatever the lengths: both sides are hashed to 32 bytes first."""
    key = b"console-password-compare"
    return hmac.compare_digest(hmac.new(key, given.encode(), hashlib.sha256).digest(),
                               hmac.new(key, password.encode(), hashlib.sha256).digest())


def logged_in() -> bool:
    password = runtime().config.console.password
    return bool(password) and hmac.compare_digest(str(session.get(SESSION_KEY, "")), _fingerprint(password))


def client_address() -> str:
    """The client's address: the socket's, or the one `console.trusted_proxies` proxies say they saw."""
    proxies = runtime().config.console.trusted_proxies
    if proxies:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.remote_addr or "unknown"


@bp.before_request
def _guard() -> Any:
    if not runtime().config.console.password:
        return render_template("console/off.html", env=runtime().config.console.password_env), 404
    if isinstance(session, NullSession):  # no signing key: the database could not be read
        return render_template("console/unavailable.html"), 503
    if request.endpoint not in OPEN and not logged_in():
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        return render_template("console/refused.html", why="Log in first."), 403
    if request.method == "POST" and request.endpoint != "console.static":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            return render_template("console/refused.html", why=f"The form was refused: {exc} "
                                   "Open the page again and resend it."), 400
    return None


@bp.errorhandler(404)
def _not_found(exc: Exception) -> Any:
    return render_template("console/refused.html", title="Not found",
                           why="Nothing is here: the lead may have been pruned, or the link is wrong."), 404


@bp.app_context_processor
def _csrf() -> dict[str, Any]:
    return {"csrf_token": generate_csrf, "logged_in": logged_in}


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another host (an open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith(PREFIX) and "\\" not in target:
            return target
    return url_for("console.destinations")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    console = runtime().config.console
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if logged_in():
            return redirect(target)
        return render_template("console/login.html", next=target)
    logins = runtime().store.logins()
    client = f"client:{client_address()}"
    locked = logins.locked_until([client, EVERYONE])
    if locked is not None:
        return render_template("console/login.html", next=target, locked_until=locked), 429
    if not _same(request.form.get("password", ""), console.password):
        locked = logins.failed([Limit(client, console.lockout_failures),
                                Limit(EVERYONE, console.lockout_global_failures)],
                               console.lockout_window, console.lockout_duration)
        log.warning("console login refused (wrong password)%s", ", now locked out" if locked else "",
                    extra={"outcome": "refused"})
        if locked is not None:
            return render_template("console/login.html", next=target, locked_until=locked), 429
        return render_template("console/login.html", next=target, wrong=True), 401
    logins.succeeded(client)
    session.clear()  # nothing from before the login survives it
    session.permanent = True
    session[SESSION_KEY] = _fingerprint(console.password)
    log.info("console login", extra={"outcome": "login"})
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("console.login"))


@bp.get("/")
def home() -> Any:
    return redirect(url_for("console.destinations"))
