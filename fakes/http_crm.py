"""A generic CRM that takes one lead per POST and upserts it by the X-Lead-Key header, or addresses a
record by its URL as a REST CRM does: `PUT /leads/<key>` upserts that key, `PATCH /leads/<crm id>` updates
the record with that id (404 if there is none). The key or id is read from the raw request line and
percent-decoded once, so a test sees exactly what the connector put in the URL (the WSGI PATH_INFO has
`%2F` already decoded into a `/`).

Tests script its answers: `fail_next(503, times=2)`, `fail_for(lead_key, 429, ...)`, a delay per request
or per lead (`slow[lead_key] = 5`),
`drop_next()` (the connection closes before anything is written) and `lose_next_answer()` (the
lead is written, then the connection closes before the answer leaves).
It counts every request, so a test can tell "sent twice" from "stored twice".

It honours `Idempotency-Key` the way Stripe's API v1 does: "Stripe saves the status code and body
of the first request made with a given idempotency key after endpoint execution begins. Retries
with the same key return the saved response" (docs.stripe.com/api/idempotent_requests), writing
nothing, and a key reused with different parameters is refused with 400 `idempotency_error`.
Answers given before execution begins (a gateway's 5xx, a rate limiter's 429, a dropped
connection) are not saved, so scripted failures here are not either.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, jsonify, request
from werkzeug.routing import BaseConverter

DROP = -1  # a scripted "status": close the connection without an answer, before executing
LOSE = -2  # execute (write, save the answer), then close the connection without an answer


class FakeCrm:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.creates: Counter[str] = Counter()  # records created per key: exactly once means 1
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.saved: dict[str, tuple[bytes, int, dict[str, Any]]] = {}  # idempotency key -> (body, status, answer)
        self.replays = 0
        self.delay = 0.0
        self.slow: dict[str, float] = {}  # lead key -> seconds this lead's requests take
        self.by_lead: defaultdict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = defaultdict(list)
        self.ids: dict[str, str] = {}  # CRM id -> record key
        self.written_at: dict[str, float] = {}  # record key -> time.monotonic() of its last write
        self.started = 0  # requests that arrived, counted before the delay
        self.in_flight = 0
        self.peak = 0  # the most requests in flight at once
        self.lock = threading.Lock()
        self.app = self._build()

    def fail_next(self, status: int, times: int = 1, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> None:
        self.script += [(status, body or {"code": "error", "message": f"scripted {status}"}, headers or {})] * times

    def fail_for(self, lead_key: str, status: int, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        """Answer the next request for this lead (by X-Lead-Key) so, whatever order requests arrive in."""
        self.by_lead[lead_key].append((status, body or {"code": "error", "message": f"scripted {status}"},
                                       headers or {}))

    def drop_next(self, times: int = 1) -> None:
        self.script += [(DROP, {}, {})] * times

    def lose_next_answer(self, times: int = 1) -> None:
        self.script += [(LOSE, {}, {})] * times

    def _build(self) -> Flask:
        app = Flask("fake_crm")
        app.url_map.converters["anything"] = _Anything
        app.url_map.merge_slashes = False  # a key may hold "//": no redirect to a merged path

        @app.route("/leads", methods=["POST", "PUT", "PATCH"])
        def upsert():  # noqa: ANN202
            return self._handle(lambda: _lead_key(), create=True)

        @app.route("/leads/<anything:_>", methods=["PUT", "PATCH"])
        def addressed(_: str):  # noqa: ANN202
            raw = request.environ.get("RAW_URI") or request.environ["REQUEST_URI"]
            address = unquote(raw.split("?", 1)[0].split("/leads/", 1)[1], errors="strict")
            if request.method == "PUT":  # PUT /leads/<key>: create or replace the record with this key
                return self._handle(lambda: address, create=True, replace=True, address=address)
            return self._handle(lambda: self.ids.get(address), create=False, address=address)

        @app.delete("/leads/<crm_id>")
        def erase(crm_id: str) -> Any:  # `connector forget --crm` with privacy.erase.<name>.url
            with self.lock:
                self.requests.append({"headers": dict(request.headers), "body": b"", "method": "DELETE",
                                      "path": request.path})
                status, scripted, headers = self.script.pop(0) if self.script else (0, {}, {})
                if status > 0:
                    return jsonify(scripted), status, headers
                lead_key = crm_id.removeprefix("crm-")
                if self.records.pop(lead_key, None) is None:
                    return jsonify(code="not_found", message="no such lead"), 404
                return Response(status=204)

        return app

    def _handle(self, key_of: Any, *, create: bool, replace: bool = False, address: str | None = None) -> Any:
        lead_key = _lead_key()
        with self.lock:
            self.started += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            delay = self.slow.get(lead_key, self.delay)
            if delay:
                time.sleep(delay)
            with self.lock:
                return self._answer(key_of, create, replace, address, lead_key)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, key_of: Any, create: bool, replace: bool, address: str | None, lead_key: str) -> Any:
        body = request.get_data()
        self.requests.append({"headers": dict(request.headers), "body": body, "method": request.method,
                              "address": address})
        if self.by_lead.get(lead_key):
            status, scripted, headers = self.by_lead[lead_key].pop(0)
        else:
            status, scripted, headers = self.script.pop(0) if self.script else (0, {}, {})
        if status == DROP:
            return _drop()
        if status > 0:
            return jsonify(scripted), status, headers
        idempotency = request.headers.get("Idempotency-Key")
        if idempotency and idempotency in self.saved:
            first_body, saved_status, answer = self.saved[idempotency]
            if first_body != body:
                return jsonify(code="idempotency_error", message="Keys for idempotent requests can only be "
                               "used with the same parameters they were first used with."), 400
            self.replays += 1
            return jsonify(answer), saved_status, {"Idempotent-Replayed": "true"}
        key = key_of()
        if key is None or (not create and key not in self.records):
            return jsonify(code="not_found", message="no such lead"), 404
        created = key not in self.records
        if replace:
            self.records[key] = json.loads(body)
        else:
            self.records.setdefault(key, {}).update(json.loads(body))
        self.creates[key] += created
        self.ids[f"crm-{key}"] = key
        self.written_at[key] = time.monotonic()
        answer, saved_status = {"id": f"crm-{key}", "created": created}, 201 if created else 200
        if idempotency:
            self.saved[idempotency] = (body, saved_status, answer)
        if status == LOSE:
            return _drop()
        return jsonify(answer), saved_status


class _Anything(BaseConverter):
    """The rest of the path, whatever it holds (werkzeug's `path` refuses a leading or doubled `/`)."""

    regex = ".*"
    part_isolating = False


def _lead_key() -> str:
    """X-Lead-Key as the connector meant it: it percent-encodes what a header cannot carry."""
    return unquote(request.headers.get("X-Lead-Key", ""), errors="strict")


def _drop() -> Response:
    """Close the client's connection now: it sees the connection end with no answer."""
    connection = request.environ.get("werkzeug.socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
    return Response(status=500)
