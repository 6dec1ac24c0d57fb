"""gunicorn settings for the receiver (`web:` in the Procfile). The address and the counts can be set by env."""

import os
import tempfile

from connector.logs import setup_logging

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One gevent process per core this process may run on, at most 4. Each serves many connections at
# once and waits for the disk off its own thread (store/engine.py), so a process more than the cores
# adds memory (~70 MiB RSS each), not throughput: bench/peer.py, bench/README.md ("Side by side").
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
workers = int(os.environ.get("WEB_CONCURRENCY", str(min(_cores, 4))))
# gevent, answering unparseable requests as JSON (connector/gunicorn_worker.py says why): a client
# that sends its request slowly holds one greenlet, not one of a few threads.
worker_class = "connector.gunicorn_worker.ReceiverWorker"
worker_connections = int(os.environ.get("GUNICORN_CONNECTIONS", "1000"))  # per worker process
# Header limits (gunicorn's defaults, stated): a longer line is answered 414, more or longer headers 431.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
timeout = 30
graceful_timeout = 20
keepalive = 5
# Each worker process listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections
# over them. With one shared socket, whichever process is awake accepts a burst of keep-alive
# connections, often all of them, and then serves them on one core. A worker that dies drops the
# connections still waiting in its socket; their senders retry, as for any connection reset.
reuse_port = True
accesslog = None  # the app logs one line per webhook, without personal data
errorlog = "-"
# gunicorn's own messages ("Booting worker", "Worker (pid:N) was sent SIGKILL!", timeouts) go through
# the root logger, so they come out as the connector's JSON lines, redacted like every other line.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"handlers": [], "propagate": True, "qualname": "gunicorn.error"},
        "gunicorn.access": {"handlers": [], "propagate": True, "qualname": "gunicorn.access"},
    },
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                            "formatter": "json", "filters": ["redact"]}},
    "formatters": {"json": {"()": "connector.logs.JsonFormatter"}},
    "filters": {"redact": {"()": "connector.logs.RedactingFilter"}},
}

# Counters from every worker process are summed through files in this folder.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="connector-metrics-")

# prometheus_client chooses its multiprocess value class when first imported: only after the folder is set.
from prometheus_client import multiprocess  # noqa: E402


def on_starting(server):  # noqa: ANN001, ARG001 - gunicorn's hook signature
    setup_logging()


def post_fork(server, worker):  # noqa: ANN001, ARG001
    setup_logging()


def post_worker_init(worker):  # noqa: ANN001
    """The app is loaded: warm it before this worker listens (gunicorn_worker.ReceiverWorker)."""
    from connector.web import warm_up

    if "connector.runtime" in getattr(worker.wsgi, "extensions", {}):  # not bench/bare_app.py's endpoint
        warm_up(worker.wsgi)


def child_exit(server, worker):  # noqa: ANN001, ARG001
    multiprocess.mark_process_dead(worker.pid)
