"""The HTTP destination reads requests' environment settings once, at start, and still honours them.

requests looks the proxy variables, the CA-bundle variables and ~/.netrc up on every request; the
destination reads them once for its URL (connector.destinations.http.trust_environment_once) and then
sends without that lookup. These check it still goes where those settings say.
"""

from __future__ import annotations

import socket
import threading

from connector.destinations.http import HttpDestination, Settings
from connector.records import OutboundRecord


def _record() -> OutboundRecord:
    return OutboundRecord(delivery_id=1, lead_key="leaditio:L1", event_type="lead.new", values={"LeaditioId": "L1"},
                          policies={}, known=False, crm_id=None)


def test_a_proxy_from_the_environment_carries_the_request(monkeypatch):
    """HTTP_PROXY set before the destination is built: the POST goes to the proxy, in absolute form."""
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            seen.append(data.split(b"\r\n", 1)[0])
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n'
                         b'Connection: close\r\n\r\n{"id":"c1"}')

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    destination = HttpDestination("crm", Settings(url="http://crm.invalid/leads", timeout=5))
    try:
        [outcome] = destination.send([_record()])
    finally:
        destination.close()
        listener.close()
    thread.join(5)
    assert outcome.ok and outcome.crm_id == "c1"
    assert seen == [b"POST http://crm.invalid/leads HTTP/1.1"]


def test_no_proxy_and_the_ca_bundle_variable_are_honoured(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "crm.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    bypassed = HttpDestination("crm", Settings(url="https://crm.example/leads"))
    proxied = HttpDestination("crm", Settings(url="https://other.example/leads"))
    own_ca = HttpDestination("crm", Settings(url="https://crm.example/leads", ca_bundle="/etc/own-ca.pem"))
    assert not bypassed.session.trust_env and not bypassed.session.proxies
    assert bypassed.session.verify == str(bundle)
    assert proxied.session.proxies["https"] == "http://proxy.invalid:3128"
    assert own_ca.session.verify == "/etc/own-ca.pem"  # the destination's own setting wins
