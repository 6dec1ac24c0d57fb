"""The HTTP destination sends through urllib3 and still honours what requests read from the environment.

requests looked the proxy variables, the CA-bundle variables and ~/.netrc up on every request; the
destination reads them once for its URL (connector.destinations.http.connection_pool). These check it
still goes where those settings say, and that a redirect is an answer, not followed.
"""

from __future__ import annotations

import socket
import threading

import certifi
import urllib3
from flask import Flask

from connector.destinations.http import HttpDestination, Settings
from connector.records import OutboundRecord
from fakes.http_crm import FakeCrm
from fakes.server import serve
from fakes.tls import FakeCA


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
    assert not isinstance(bypassed.pool, urllib3.ProxyManager)
    assert bypassed.pool.connection_pool_kw["ca_certs"] == str(bundle)
    assert isinstance(proxied.pool, urllib3.ProxyManager) and proxied.pool.proxy.host == "proxy.invalid"
    assert own_ca.pool.connection_pool_kw["ca_certs"] == "/etc/own-ca.pem"  # the destination's own setting wins


def test_without_the_variable_certifi_is_trusted_as_with_requests(monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    destination = HttpDestination("crm", Settings(url="https://crm.example/leads"))
    assert destination.pool.connection_pool_kw["ca_certs"] == certifi.where()


def test_a_redirect_is_an_answer_not_followed():
    """requests followed a 302 and sent the lead's POST on as a GET without its body."""
    crm = Flask("redirecting")
    hits: list[str] = []

    @crm.route("/leads", methods=["POST"])
    def leads():  # noqa: ANN202
        hits.append("POST /leads")
        return "", 302, {"Location": "/elsewhere"}

    @crm.route("/elsewhere", methods=["GET", "POST"])
    def elsewhere():  # noqa: ANN202
        hits.append("elsewhere")
        return {"id": "x"}

    with serve(crm, quiet=True) as url:
        destination = HttpDestination("crm", Settings(url=f"{url}/leads", timeout=5))
        [outcome] = destination.send([_record()])
        destination.close()
    assert hits == ["POST /leads"]
    assert not outcome.ok and "302" in outcome.error.describe()


def test_https_to_a_crm_of_a_private_authority_with_ca_bundle(tmp_path, monkeypatch):
    """`ca_bundle` is trusted; without it (certifi only) the same CRM's certificate is refused, as a network error."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = FakeCA()
    crm = FakeCrm()
    with serve(crm.app, tls=ca, quiet=True) as url:
        trusted = HttpDestination("crm", Settings(url=f"{url}/leads", timeout=5, ca_bundle=ca.write_bundle(tmp_path)))
        strange = HttpDestination("crm", Settings(url=f"{url}/leads", timeout=5))
        [ok] = trusted.send([_record()])
        [refused] = strange.send([_record()])
        trusted.close()
        strange.close()
    assert ok.ok and crm.records["leaditio:L1"]["LeaditioId"] == "L1"
    assert not refused.ok and refused.error.code == "network"
