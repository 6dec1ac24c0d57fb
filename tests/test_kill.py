"""A worker process killed with SIGKILL mid-delivery: another worker finishes, the lead lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from connector.runtime import Runtime
from connector.store import Store
from connector.store.schema import DELIVERED
from connector.worker import Worker
from fakes.server import serve
from tests.conftest import ENV, ROOT, leaditio_payload, post_webhook, wait_for, write_config


@pytest.mark.slow
def test_sigkill_mid_delivery_leaves_the_lead_exactly_once(tmp_path, database_url, fake_crm):
    from connector.config import load_config
    from connector.web import create_app

    path = write_config(tmp_path, database_url, worker={"lease": 2, "poll_interval": 0.05},
                        destinations={"crm": {"type": "http", "url": fake_crm.url, "mapping": "mappings/file.yaml"}},
                        routes=[{"source": "leaditio", "destination": "crm"}])
    config = load_config(path, env=ENV)
    store = Store(config.database.url)
    store.upgrade()
    with serve(create_app(Runtime(config, store))) as url:
        assert post_webhook(url, leaditio_payload()).status_code == 200

    fake_crm.delay = 1.5  # the CRM is slow: the kill lands while the request is in flight
    worker = subprocess.Popen([sys.executable, "-m", "connector", "--config", str(path), "worker", "--threads", "1"],
                              cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: fake_crm.started >= 1, timeout=30)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    [row] = store.deliveries_query()
    assert row["state"] != DELIVERED and row["lease_owner"]  # killed before it could settle

    fake_crm.delay = 0
    started = time.monotonic()
    Worker(Runtime(config, store)).drain(timeout=20)  # waits out the dead worker's lease, then delivers
    assert time.monotonic() - started >= 0.5
    [row] = store.deliveries_query()
    assert row["state"] == DELIVERED
    assert fake_crm.started == 2  # sent twice ...
    assert list(fake_crm.records) == ["leaditio:lead_abc123"]  # ... present once
    store.dispose()
