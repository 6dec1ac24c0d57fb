"""The one TLS setup for the fakes: a throwaway trustme CA, a server certificate for 127.0.0.1 and
localhost, and the PEM bundle a client has to trust.

simple-salesforce forces https, and the HubSpot tests prove the connector's CA-bundle setting, so some
fakes must speak TLS; a private CA keeps the real trust store out of it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import trustme


class FakeCA(trustme.CA):
    """A trustme CA that can also hand a fake its server context and a client its CA file."""

    def server_context(self) -> ssl.SSLContext:
        """A server-side context with a certificate this CA signed for 127.0.0.1 and localhost."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context

    def write_bundle(self, folder: str | Path, name: str = "fake-ca.pem") -> str:
        """Write this CA's certificate as a PEM file under `folder`; returns its path."""
        path = str(Path(folder) / name)
        self.cert_pem.write_to_path(path)
        return path

    def trust(self, monkeypatch: Any, folder: str | Path, name: str = "fake-ca.pem") -> str:
        """Make `requests` in this process trust the CA the way that survives CI images: through the
        environment (REQUESTS_CA_BUNDLE), undone by `monkeypatch` after the test. Returns the file."""
        path = self.write_bundle(folder, name)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", path)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        return path
