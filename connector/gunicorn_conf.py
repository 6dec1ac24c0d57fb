"""gunicorn settings for the receiver (`web:` in the Procfile). The address and the counts can be set by env."""

import os
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
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

# Counters from every worker process are summed through files in this folder.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="connector-metrics-")


def on_starting(server):  # noqa: ANN001, ARG001 - gunicorn's hook signature
    from connector.logs import setup_logging

    setup_logging()


def post_fork(server, worker):  # noqa: ANN001, ARG001
    from connector.logs import setup_logging

    setup_logging()


def child_exit(server, worker):  # noqa: ANN001, ARG001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
