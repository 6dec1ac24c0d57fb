"""The webhook receiver: verify, store, answer. Nothing else happens on the request path.

`create_app()` is what gunicorn serves (`connector.web:create_app()`); errors are answered as
JSON `{"code", "message"}` with the marketplaces' own codes.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from connector import intake, metrics
from connector.runtime import Runtime, load_runtime
from connector.sources import InvalidPayload
from connector.store import StoreUnavailable
from connector.web import console

log = logging.getLogger("connector.web")
bp = Blueprint("receiver", __name__)


def problem(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(code=code, message=message), status


def _runtime() -> Runtime:
    return current_app.extensions["connector.runtime"]


@bp.post("/webhooks/<source>")
def receive(source: str) -> Any:
    runtime = _runtime()
    marketplace = runtime.marketplaces.get(source)
    if marketplace is None:
        metrics.REJECTED.labels("unknown", "not_found").inc()
        return problem(404, "not_found", f"no source named '{source}'")
    limit = runtime.config.body_limit(source)
    if (request.content_length or 0) > limit:
        return _too_large(source, limit)
    try:
        body = request.get_data(cache=False)
    except (OSError, ParseException) as exc:  # e.g. gunicorn's InvalidChunkSize for broken chunked framing
        return _refused(source, 400, "invalid_request", "the body could not be read (broken chunked encoding?)",
                        f"the body could not be read: {exc}")
    if len(body) > limit:
        return _too_large(source, limit)
    secret_index = marketplace.verify(body, request.headers)
    if secret_index is None:
        reason = "missing" if not request.headers.get(marketplace.signature_header) else "invalid"
        return _refused(source, 401, "unauthorized", f"{reason} {marketplace.signature_header}")
    try:
        event = marketplace.parse(body)
    except InvalidPayload as exc:
        return _refused(source, 400, "invalid_request", str(exc))
    try:
        recorded = intake.accept(runtime.config, runtime.store, event, body, secret_index)
    except StoreUnavailable as exc:
        metrics.REJECTED.labels(source, "unavailable").inc()
        log.error("webhook to %s not stored (the sender will retry): %s", source, exc,
                  extra={"source": source, "outcome": "unavailable"})
        return problem(503, "unavailable", "the connector cannot store events right now; retry later")
    if recorded.duplicate:
        metrics.DUPLICATES.labels(source).inc()
        log.info("webhook %s %s for %s: duplicate of event %s", source, event.event_type, event.lead_id,
                 recorded.event_id, extra={"source": source, "event_type": event.event_type, "lead_id": event.lead_id,
                                           "event_id": recorded.event_id, "outcome": "duplicate"})
        return jsonify(status="duplicate", event_id=recorded.event_id)
    metrics.RECEIVED.labels(source).inc()
    status = "accepted" if event.deliverable else "ignored"
    log.info("webhook %s %s for %s: %s as event %s, %d deliveries%s (secret #%d)", source, event.event_type,
             event.lead_id, status, recorded.event_id, recorded.deliveries,
             f" skipped ({recorded.skipped}: stored without personal data)" if recorded.skipped else "",
             secret_index + 1,
             extra={"source": source, "event_type": event.event_type, "lead_id": event.lead_id,
                    "event_id": recorded.event_id, "outcome": status})
    return jsonify(status=status, event_id=recorded.event_id, deliveries=recorded.deliveries)


def _refused(source: str, status: int, code: str, message: str, why: str | None = None) -> tuple[Response, int]:
    """A webhook the sender must fix: counted, logged once with why, answered `{"code","message"}`."""
    metrics.REJECTED.labels(source, code).inc()
    log.warning("webhook to %s refused: %s", source, why or message, extra={"source": source, "outcome": "refused"})
    return problem(status, code, message)


def _too_large(source: str, limit: int) -> tuple[Response, int]:
    metrics.REJECTED.labels(source, "too_large").inc()
    return problem(413, "payload_too_large", f"body is larger than {limit} bytes")


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    if _runtime().store.ping():
        return jsonify(status="ready")
    return problem(503, "unavailable", "the database is not reachable")


@bp.get("/metrics")
def metrics_endpoint() -> Any:
    runtime = _runtime()
    config = runtime.config
    token = config.server.metrics_token.get_secret_value() if config.server.metrics_token else ""
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return problem(401, "unauthorized", "metrics need the bearer token")
    # Label values are names from the config, but nothing that leaves the process skips the redactor.
    text = runtime.redactor.secrets(metrics.render(runtime.store).decode())
    return Response(text, mimetype="text/plain; version=0.0.4")


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "invalid_request",
             414: "uri_too_long", 431: "headers_too_large"}
    status = exc.code or 500
    return problem(status, codes.get(status, "invalid_request" if status < 500 else "internal_error"),
                   exc.description or exc.name)


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unexpected error answering %s %s", request.method, request.path)
    return problem(500, "internal_error", "unexpected server error; retry with backoff")


def warm_up(app: Flask) -> None:
    """Do before a process accepts connections what its first webhooks would otherwise wait for: the
    database connections, the marketplaces, each source's metric values (files, under gunicorn), Flask's
    URL map and a JSON answer. Nothing is stored or counted. gunicorn_conf.py calls it in each
    worker process, which listens only afterwards (gunicorn_worker.py); `connector serve` before serving.
    """
    runtime: Runtime = app.extensions["connector.runtime"]
    try:
        runtime.store.warm_up()
    except runtime.store.database_errors as exc:  # serve anyway: webhooks get 503 until it answers, as before
        cause = getattr(exc, "orig", None) or exc
        log.warning("database unavailable at start (%s: %s); webhooks are answered 503 until it answers",
                    type(cause).__name__, (str(cause).splitlines() or [""])[0])
    for source, marketplace in runtime.marketplaces.items():
        metrics.RECEIVED.labels(source)
        metrics.DUPLICATES.labels(source)
        marketplace.verify(b"{}", {marketplace.signature_header: "0"})  # a wrong signature: refused
    app.test_client().get("/healthz")


def create_app(runtime: Runtime | None = None) -> Flask:
    """The receiver app; without an argument it reads the config file named by CONNECTOR_CONFIG."""
    runtime = runtime or load_runtime()
    config = runtime.config
    app = Flask(__name__)
    # Flask's own cap, for chunked bodies that announce no length; per-source limits are checked above.
    app.config["MAX_CONTENT_LENGTH"] = max([config.body_limit(name) for name in config.sources] or [0])
    app.json.sort_keys = False
    app.extensions["connector.runtime"] = runtime
    app.register_blueprint(bp)
    console.install(app, runtime)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app
