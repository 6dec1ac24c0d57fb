"""The Procfile's `web` process as a host runs it: gunicorn with connector/gunicorn_conf.py, two workers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from connector.store import Store
from fakes.gunicorn_procs import worker_sockets
from tests.conftest import ENV, ROOT, leaditio_payload, post_webhook, sign, wait_for, write_config

WORKERS = 2


def procfile_command(process: str) -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command)
    raise AssertionError(f"no '{process}' in the Procfile")


@contextmanager
def web_process(tmp_path: Path, database_url: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """The Procfile's web command on a free $PORT, once every worker listens; its output goes to tmp_path."""
    config = write_config(tmp_path, database_url)
    store = Store(database_url)
    store.upgrade()
    store.dispose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = procfile_command("web")
    assert command[0] == "gunicorn"
    env = {**os.environ, **ENV, "PORT": str(port), "WEB_CONCURRENCY": str(WORKERS),
           "CONNECTOR_CONFIG": str(config)}
    with (tmp_path / "web.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(listening := worker_sockets(server.pid, port, "0A")) == WORKERS
                 and all(listening.values()), timeout=30)
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_web_process_stores_a_signed_webhook_and_logs_it_without_contact_details(tmp_path, database_url):
    with web_process(tmp_path, database_url) as (_, port):
        answer = post_webhook(f"http://127.0.0.1:{port}", leaditio_payload("lead_gunicorn"))
        refused = post_webhook(f"http://127.0.0.1:{port}", leaditio_payload(), secret="wrong")
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    store = Store(database_url)
    assert store.status()["events"] == 1
    store.dispose()
    log = (tmp_path / "web.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    accepted = [line["message"] for line in lines if "lead_gunicorn" in line.get("message", "")]
    assert accepted and "accepted" in accepted[0]
    assert "27823456789" not in log and "thabo.m@gmail.com" not in log


def test_each_worker_listens_on_its_own_socket_so_keep_alive_connections_spread(tmp_path):
    """One shared socket lets whichever worker is awake take a burst of connections, often all of them."""
    with web_process(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}") as (server, port):
        listening = worker_sockets(server.pid, port, "0A")
        assert len(set().union(*listening.values())) == WORKERS  # a socket each, not one shared
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            for connection in connections:  # one answered request each: the connection is accepted and kept
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            held = wait_for(lambda: (found := worker_sockets(server.pid, port))
                            and sum(map(len, found.values())) == 32 and found)
        finally:
            for connection in connections:
                connection.close()
    # The kernel hashes each connection to a worker's socket: all 32 on one of two has odds of 2 in 2**32.
    assert all(held.values()), {pid: len(sockets) for pid, sockets in held.items()}


@pytest.mark.slow
def test_slow_clients_do_not_delay_valid_webhooks(tmp_path):
    """50 connections sending their headers a byte a second and 50 announcing more body than they send.

    Under gthread (4 x 4 threads) 16 such clients held every thread; valid webhooks waited 35 s and more.
    Run with GUNICORN_CMD_ARGS="-k gthread --threads 4" set to see that again.
    """
    stop = threading.Event()
    with web_process(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}") as (_, port):
        url = f"http://127.0.0.1:{port}"
        before = [_timed_webhook(url, f"lead_before_{i}") for i in range(3)]
        slow_headers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        short_bodies = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        body = b'{"event": "lead.new"'
        for connection in short_bodies:
            connection.sendall(b"POST /webhooks/leaditio HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                               b"X-Leaditio-Signature: " + sign(body).encode() + b"\r\nContent-Length: 5000\r\n\r\n"
                               + body)
        trickle = threading.Thread(target=_trickle, args=(slow_headers, stop), daemon=True)
        trickle.start()
        try:
            time.sleep(2.5)  # every slow client has sent something, and holds whatever it can
            during = [_timed_webhook(url, f"lead_during_{i}") for i in range(5)]
        finally:
            stop.set()
            trickle.join(timeout=10)
            for connection in slow_headers + short_bodies:
                connection.close()
    assert all(status == 200 for status, _ in before + during), before + during
    slowest_before = max(seconds for _, seconds in before)
    assert max(seconds for _, seconds in during) < slowest_before + 1.0, (before, during)


def _timed_webhook(url: str, lead_id: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        answer = post_webhook(url, leaditio_payload(lead_id))
    except OSError as exc:  # requests' timeouts are OSErrors too: reported, not raised
        return type(exc).__name__, time.monotonic() - started
    return answer.status_code, time.monotonic() - started


def _trickle(connections: list[socket.socket], stop: threading.Event) -> None:
    """A request line and headers, one byte per connection per second, never finished; 10 s at most."""
    head = b"POST /webhooks/leaditio HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 200
    for index in range(min(len(head), 10)):
        for connection in connections:
            with suppress(OSError):
                connection.send(head[index:index + 1])
        if stop.wait(1.0):
            return


@pytest.mark.slow
def test_gunicorn_lines_are_json_even_after_a_worker_is_killed(tmp_path):
    with web_process(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}") as (server, port):
        victim = next(iter(worker_sockets(server.pid, port, "0A")))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "SIGKILL" in (tmp_path / "web.log").read_text(), timeout=20)
        wait_for(lambda: len(listening := worker_sockets(server.pid, port, "0A")) == WORKERS
                 and victim not in listening, timeout=30)
    log = (tmp_path / "web.log").read_text()
    assert "Logging error" not in log and "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    messages = [line["message"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any("Booting worker" in m for m in messages) and any("SIGKILL" in m for m in messages)


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    return answer


@pytest.mark.slow
def test_requests_gunicorn_cannot_parse_get_json_client_errors_without_a_traceback(tmp_path):
    head = b"POST /webhooks/leaditio HTTP/1.1\r\nHost: test\r\nX-Leaditio-Signature: x\r\n"
    with web_process(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}") as (_, port):
        chunked = _raw(port, head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        headers = _raw(port, head + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n")
        deep = _raw(port, b"".join([head, b"Content-Length: 200000\r\n\r\n", b"[" * 200_000]))
    for answer, status, code in ((chunked, b"400", "invalid_request"), (headers, b"431", "headers_too_large"),
                                 (deep, b"401", "unauthorized")):
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == code
    log = (tmp_path / "web.log").read_text()
    assert "Traceback" not in log and "Logging error" not in log
