"""Finding a person's events without keeping their email or phone readable: keyed hashes.

`events.email_hash` and `events.phone_hash` hold an HMAC-SHA256 of the normalised email and phone,
keyed by a random salt made once per database (`store_meta.lookup_salt`). A search (the console's
lead search, `connector forget`) hashes what it is given the same way and looks the hash up, so
the lookup works on encrypted or erased bodies, and a dump of the table alone does not give the
numbers back without the salt.

Phones are compared in one form whatever way they were written: `082 555 0101`, `0825550101`,
`+27 82 555 0101` and `0027825550101` are one number. The form is the digits of the
international number, with a leading trunk `0` read as South Africa's (+27), the country every
marketplace we take leads from sells in. That is cheaper than a full parse on the webhook path,
and it is used on both sides of every comparison, so the two always agree.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SALT_KEY = "lookup_salt"
HOME_COUNTRY_CODE = "27"  # a trunk 0 means South Africa


def new_salt() -> str:
    return secrets.token_hex(32)


def normal_email(value: object) -> str | None:
    text = str(value).strip().casefold() if value is not None else ""
    return text if "@" in text else None


def normal_phone(value: object) -> str | None:
    """The number's international digits, or None when there are too few digits to be a number."""
    if value is None:
        return None
    text = str(value).strip()
    digits = "".join(ch for ch in text if ch.isdigit() and ch.isascii())
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = HOME_COUNTRY_CODE + digits[1:]
    if digits.startswith(HOME_COUNTRY_CODE + "0"):  # `+27 (0)82 ...`: the trunk 0 written after the country code
        digits = HOME_COUNTRY_CODE + digits[len(HOME_COUNTRY_CODE) + 1:]
    return digits if len(digits) >= 7 else None


@dataclass(frozen=True)
class PersonHasher:
    """Keyed hashes of a person's email and phone; None when the value is missing or not one."""

    salt: str

    def _digest(self, kind: str, normal: str | None) -> str | None:
        if normal is None:
            return None
        return hmac.new(self.salt.encode(), f"{kind}:{normal}".encode(), hashlib.sha256).hexdigest()

    def email(self, value: object) -> str | None:
        return self._digest("email", normal_email(value))

    def phone(self, value: object) -> str | None:
        return self._digest("phone", normal_phone(value))

    def of_lead(self, lead: Mapping[str, Any]) -> tuple[str | None, str | None]:
        return self.email(lead.get("email")), self.phone(lead.get("phone"))
