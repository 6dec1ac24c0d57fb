"""Webhook signatures of every marketplace, through the Marketplace class (the receiver's only check)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from connector.config import SourceConfig
from connector.sources import Marketplace, marketplace_class

BODY = json.dumps({"id": "evt_1", "type": "engagement.created", "event": "lead.delivered",
                   "data": {"engagement_id": "eng_1"}}).encode()
OLD, NEW = "whsec_old_0123456789", "whsec_new_9876543210"


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# What each marketplace's documentation says its header carries, written out independently of our code.
DOCUMENTED = {
    "leaditio": ("X-Leaditio-Signature", lambda secret, body: hex_hmac(secret, body)),
    "leados": ("X-LeadOS-Signature", lambda secret, body: "sha256=" + hex_hmac(secret, body)),
    "leadnod": ("X-LeadNod-Signature", lambda secret, body: hex_hmac(secret, body)),
}
# A plausible but wrong spelling of each: the other convention.
WRONG_PREFIX = {
    "leaditio": lambda secret, body: "sha256=" + hex_hmac(secret, body),
    "leados": lambda secret, body: hex_hmac(secret, body),
    "leadnod": lambda secret, body: "sha256=" + hex_hmac(secret, body),
}


def source(name: str, *secrets: str) -> Marketplace:
    return marketplace_class(name)(name, SourceConfig(marketplace=name, secrets=list(secrets)))


@pytest.fixture(params=sorted(DOCUMENTED))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_header_name_is_the_documented_one(name: str) -> None:
    assert source(name, NEW).signature_header == DOCUMENTED[name][0]


def test_valid_signature_is_accepted(name: str) -> None:
    header, signer = DOCUMENTED[name]
    assert source(name, NEW).verify(BODY, {header: signer(NEW, BODY)}) == 0


def test_sign_produces_what_the_marketplace_sends(name: str) -> None:
    header, signer = DOCUMENTED[name]
    assert source(name, NEW).sign(NEW, BODY) == signer(NEW, BODY)


@pytest.mark.parametrize("prefix", ["sha1=", "SHA256=", "sha512="])
def test_other_algorithm_prefixes_are_refused(name: str, prefix: str) -> None:
    header, _ = DOCUMENTED[name]
    assert source(name, NEW).verify(BODY, {header: prefix + hex_hmac(NEW, BODY)}) is None


def test_wrong_prefix_is_refused(name: str) -> None:
    header, _ = DOCUMENTED[name]
    assert source(name, NEW).verify(BODY, {header: WRONG_PREFIX[name](NEW, BODY)}) is None


def test_wrong_secret_is_refused(name: str) -> None:
    header, signer = DOCUMENTED[name]
    assert source(name, NEW).verify(BODY, {header: signer("not-the-secret", BODY)}) is None


def test_tampered_body_is_refused(name: str) -> None:
    header, signer = DOCUMENTED[name]
    tampered = BODY.replace(b"eng_1", b"eng_2")
    assert tampered != BODY
    assert source(name, NEW).verify(tampered, {header: signer(NEW, BODY)}) is None


def test_rotation_accepts_both_secrets_and_says_which(name: str) -> None:
    header, signer = DOCUMENTED[name]
    rotating = source(name, NEW, OLD)
    assert rotating.verify(BODY, {header: signer(NEW, BODY)}) == 0
    assert rotating.verify(BODY, {header: signer(OLD, BODY)}) == 1
    assert rotating.verify(BODY, {header: signer("retired", BODY)}) is None


@pytest.mark.parametrize("headers", [{}, {"X-Other-Signature": "abc"}, {"__header__": ""}, {"__header__": "  "}])
def test_missing_or_empty_header_is_refused(name: str, headers: dict[str, str]) -> None:
    header, _ = DOCUMENTED[name]
    headers = {header if k == "__header__" else k: v for k, v in headers.items()}
    assert source(name, NEW).verify(BODY, headers) is None


def test_leados_documented_verify_function_agrees() -> None:
    """The verify_signature() snippet from the LeadOS API reference accepts what we accept."""

    def verify_signature(payload: bytes, signature: str, secret: str) -> bool:  # copied from the docs
        expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    leados = source("leados", NEW)
    signature = leados.sign(NEW, BODY)
    assert verify_signature(BODY, signature, NEW)
    assert leados.verify(BODY, {"X-LeadOS-Signature": signature}) == 0
