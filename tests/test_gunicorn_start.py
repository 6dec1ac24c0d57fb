"""The first webhooks after a start are answered as fast as the rest.

With SO_REUSEPORT gunicorn opened each worker's socket before the worker had loaded the app, and the
kernel handed new connections to workers that could not answer yet (p99 1.1-3.0 s for the first 200
webhooks). A worker now listens only once its app is loaded and warmed (connector/gunicorn_worker.py,
connector.web.warm_up).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from fakes.gunicorn_procs import worker_sockets
from tests.conftest import ENV, ROOT, wait_for
from tests.test_gunicorn import procfile_command, web_process


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_worker_still_loading_the_app_does_not_listen(tmp_path):
    port = _free_port()
    command = procfile_command("web")
    command[-1] = "tests.gunicorn_slow_app:create_app()"
    env = {**os.environ, **ENV, "PORT": str(port), "WEB_CONCURRENCY": "2",
           "SLOW_APP_MARKER": str(tmp_path / "first"), "SLOW_APP_SECONDS": "6"}
    with (tmp_path / "web.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(worker_sockets(server.pid, port, "0A").values()), timeout=30)
        started = time.monotonic()
        listening = worker_sockets(server.pid, port, "0A")
        assert len(listening) == 2, listening  # both workers are forked and running...
        assert sum(1 for sockets in listening.values() if sockets) == 1  # ...one of them listens
        # A burst of new connections now all reach the worker that can answer.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert conn.recv(100).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 5  # well before the slow worker's 6 s load ends
        wait_for(lambda: all(worker_sockets(server.pid, port, "0A").values()), timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_each_worker_opens_the_database_before_it_listens(tmp_path):
    """warm_up: the SQLite file and its WAL are open in every worker before any webhook arrived."""
    with web_process(tmp_path, f"sqlite:///{tmp_path / 'connector.db'}") as (server, port):
        workers = list(worker_sockets(server.pid, port, "0A"))
        for pid in workers:
            opened = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert str(tmp_path / "connector.db") in opened
            assert str(tmp_path / "connector.db-wal") in opened


def test_a_database_down_at_start_does_not_stop_the_receiver_from_starting(tmp_path, caplog):
    """warm_up fails soft: the process starts and answers 503 until the database is back, as without it."""
    from connector.runtime import Runtime
    from connector.web import create_app, warm_up
    from tests.conftest import leaditio_payload, make_config, sign

    runtime = Runtime(make_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))
    app = create_app(runtime)
    warm_up(app)
    assert "database unavailable at start" in caplog.text
    body = json.dumps(leaditio_payload()).encode()
    answer = app.test_client().post("/webhooks/leaditio", data=body, headers={"X-Leaditio-Signature": sign(body)})
    assert answer.status_code == 503 and answer.get_json()["code"] == "unavailable"
