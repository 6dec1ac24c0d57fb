"""The operators' console at /console: server-rendered pages, plain forms and links, no JavaScript.

Off until a password is set in the environment (`console.password_env`): then every page needs a
login (auth.py). Pages: destinations and secrets and runs (pages.py), leads and their stories
(leads.py), dead letters and their retry (deadletters.py). The webhook receiver shares the app but
nothing of this: the session cookie's path is /console, and sessions are opened for console
requests alone, so a webhook neither reads nor sets a cookie and no CSRF check ever sees it.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.sessions import SecureCookieSessionInterface

from connector.runtime import Runtime
from connector.timeutil import age, iso

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
PREFIX = "/console"

# No script may run, no page may be framed, forms post only here; personal data is never cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def runtime() -> Runtime:
    return current_app.extensions["connector.runtime"]


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, for console requests only, keyed by the console's key.

    The key is the environment's (`console.secret_key_env`) or, failing that, a random one the
    database makes once (store/logins.py), so every gunicorn worker and every restart accepts the
    same cookies, and no key is written in the code. It is read on the first console request, not
    at start-up, so the receiver starts while the database is still coming up.
    """

    def __init__(self, app_runtime: Runtime):
        self._runtime = app_runtime
        self._key: str | None = None
        self._lock = threading.Lock()

    def signing_key(self) -> str | None:
        with self._lock:
            if self._key is None:
                console = self._runtime.config.console
                try:
                    self._key = console.secret_key or self._runtime.store.logins().signing_key()
                except self._runtime.store.database_errors:
                    return None  # no session this time: the page says the database is unavailable
            return self._key

    def get_signing_serializer(self, app: Flask) -> Any:
        if not self._runtime.config.console.password:
            return None
        key = self.signing_key()
        if key is None:
            return None
        app.secret_key = key  # Flask-WTF signs the CSRF tokens with the same key
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, req: Any) -> Any:
        if not req.path.startswith(PREFIX):
            return None  # a webhook, a health check: no session, no cookie
        return super().open_session(app, req)

    def get_cookie_secure(self, app: Flask) -> bool:
        secure = self._runtime.config.console.secure_cookie
        return request.is_secure if secure is None else secure


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.app_template_filter("when")
def _when(epoch: float | None) -> str:
    return (iso(epoch) or "-").replace("T", " ")[:19] if epoch else "-"


@bp.app_template_filter("age")
def _age(seconds: float | None) -> str:
    return age(seconds)


def install(app: Flask, app_runtime: Runtime) -> None:
    """Add the console to the receiver's app (its pages answer 404 while no password is set)."""
    from connector.web.console import auth, deadletters, leads, pages  # noqa: F401  (routes on `bp`)

    console = app_runtime.config.console
    app.session_interface = ConsoleSessions(app_runtime)
    app.config.update(
        SESSION_COOKIE_NAME="connector_console", SESSION_COOKIE_PATH=PREFIX, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=console.session_lifetime,
        WTF_CSRF_TIME_LIMIT=int(console.session_lifetime), WTF_CSRF_FIELD_NAME="csrf_token")
    app.register_blueprint(bp)
