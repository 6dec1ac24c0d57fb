"""Getting a Salesforce session: the four ways an org lets us in, and what a failed login means.

We log in with simple-salesforce's own `SalesforceLogin` and then hand the session to a client in
"direct" mode. The library then never refreshes a session by itself, so its 401 recursion
(simple-salesforce#804: `sf.Lead.upsert` re-logs in forever on a persistent 401) cannot happen;
the destination renews the session once itself and repeats the request.
"""

from __future__ import annotations

from typing import Any

import jwt
import requests
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from connector.destinations.salesforce.settings import Settings
from connector.errors import ConfigProblem, ConnectorError, classify, network_error


class TimeoutSession(requests.Session):
    """A requests session with a default timeout: simple-salesforce sets none (#148, #303)."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def http_session(settings: Settings) -> TimeoutSession:
    """The HTTP session every Salesforce call goes through: timeouts, and an optional private CA.

    Note: requests prefers the REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE environment variables over
    `verify`, so when either is set, `ca_bundle` has no effect.
    """
    session = TimeoutSession(settings.timeout)
    if settings.ca_bundle:
        session.verify = settings.ca_bundle
    return session


def private_key_pem(raw: str) -> str:
    """A PEM from an environment variable, where newlines are often written as `\\n`."""
    text = raw.strip()
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    return text + "\n"


def login_arguments(settings: Settings) -> dict[str, Any]:
    """SalesforceLogin's keyword arguments for the configured auth mode."""
    s = settings
    secret = _secret
    if s.auth == "password":
        if s.consumer_key and s.consumer_secret:  # OAuth username-password flow via a connected app
            return {"username": s.username, "password": secret(s.password) + secret(s.security_token),
                    "consumer_key": s.consumer_key, "consumer_secret": secret(s.consumer_secret)}
        return {"username": s.username, "password": secret(s.password),
                "security_token": secret(s.security_token)}  # SOAP login(); "" for IP-allow-listed users
    if s.auth == "client_credentials":
        return {"consumer_key": s.consumer_key, "consumer_secret": secret(s.consumer_secret)}
    if s.auth == "jwt":
        return {"username": s.username, "consumer_key": s.consumer_key,
                "privatekey": private_key_pem(secret(s.private_key))}
    raise ValueError(f"auth mode {s.auth} has no login")


def login(settings: Settings, session: requests.Session) -> Salesforce:
    """A client with a fresh session; ConfigProblem when Salesforce refuses us, Retryable when it is down."""
    s = settings
    if s.auth == "session":
        return Salesforce(session_id=_secret(s.session_id), instance_url=s.instance_url, session=session,
                          version=s.api_version)
    try:
        session_id, instance = SalesforceLogin(session=session, domain=s.domain, sf_version=s.api_version,
                                               **login_arguments(s))
    except SalesforceAuthenticationFailed as exc:
        raise login_failed(settings, exc) from None
    except requests.RequestException as exc:
        raise network_error("salesforce login", exc) from None
    except (ValueError, TypeError, jwt.PyJWTError) as exc:  # an unreadable private key, mostly
        raise ConfigProblem(f"Salesforce JWT login: the private_key cannot sign a token ({type(exc).__name__}: "
                            f"{exc}); it must be the PEM of the certificate's RSA key", code="private_key") from None
    return Salesforce(session_id=session_id, instance=instance, session=session, version=s.api_version)


def login_failed(settings: Settings, exc: SalesforceAuthenticationFailed) -> ConnectorError:
    code = exc.code
    where = f"{settings.domain}.salesforce.com"
    message = f"Salesforce login ({settings.auth}, {where}) failed: {exc.auth_message or 'no reason given'}"
    hint = LOGIN_HINTS.get(str(code))
    if hint:
        message += f". {hint}"
    if isinstance(code, int):
        return classify("salesforce-login", status=code, message=message)
    return classify("salesforce-login", code=str(code) if code else None, message=message)


LOGIN_HINTS = {
    "INVALID_LOGIN": "Check username, password and security_token (reset the token under Settings > "
                     "Reset My Security Token; use domain: test for a sandbox)",
    "invalid_grant": "Check the user, its password/token, that the user is pre-authorized for the connected "
                     "app, and for JWT that the certificate matches private_key",
    "invalid_client": "Check consumer_key and consumer_secret, and that the connected app's client "
                      "credentials flow has a Run As user",
    "invalid_client_id": "consumer_key is not the connected app's Consumer Key",
    "unsupported_grant_type": "Client credentials need your My Domain: domain: yourcompany.my "
                              "(not login or test), and the flow enabled on the connected app",
    "INVALID AUTH": "The settings do not name a complete way to log in",
}


def _secret(value: Any) -> str:
    if value is None:
        return ""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
