"""Replacing a person's personal information by a marker, wherever the store keeps text about them.

Three kinds of place:
- a lead document or a JSON body: every value under a personal key (names, email, phone, address,
  ...) becomes MARKER, and every other string has the person's email and phone taken out;
- a body that is not JSON (a form post): as text;
- free text (a stored error, an attempt summary, a checkpoint): the person's email and phone in any
  spelling (`082 555 0101`, `+27 (82) 555-0101`, `0027825550101`, ...), and any email or SA phone at all.

What stays (ids, times, event types, scores, the keyed hashes in `events.email_hash` and
`events.phone_hash`) is what dedupe, ordering, explain and the tombstone need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from connector.logs import EMAIL, PHONE
from connector.store.people import HOME_COUNTRY_CODE, normal_email, normal_phone

MARKER = "[erased]"
# Keys whose values are a person's (any marketplace's spelling); compared lower-cased.
PERSONAL_KEYS = frozenset({
    "first_name", "last_name", "full_name", "name", "surname", "given_name", "family_name", "firstname",
    "lastname", "fullname", "contact_name", "email", "email_address", "emailaddress", "phone", "phone_number",
    "phonenumber", "mobile", "mobile_number", "cell", "cellphone", "telephone", "tel", "whatsapp",
    "address", "street", "street_address", "address_line_1", "address_line_2", "id_number", "linkedin_url",
    "date_of_birth", "dob",
})
_SEPARATORS = r"[\s\-.()/\u00a0]*"


def _phone_pattern(normal: str) -> re.Pattern[str]:
    """Any spelling of one number: its digits with any separators between them, and any of its prefixes."""
    if normal.startswith(HOME_COUNTRY_CODE):
        national = normal[len(HOME_COUNTRY_CODE):]
        prefix = rf"(?:(?:\+|00){_SEPARATORS}27{_SEPARATORS}(?:\(?0\)?{_SEPARATORS})?|27{_SEPARATORS}|\(?0)?"
    else:
        national = normal
        prefix = rf"(?:(?:\+|00){_SEPARATORS})?"
    body = _SEPARATORS.join(re.escape(d) for d in national)
    return re.compile(rf"(?<!\d){prefix}{_SEPARATORS}{body}(?!\d)")


@dataclass
class Person:
    """The values to look for: one person's (forget), or one lead's own (retention, opt-out)."""

    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)  # normal forms (store/people.py)

    def add(self, email: Any = None, phone: Any = None) -> None:
        if (e := normal_email(email)) is not None:
            self.emails.add(e)
        if (p := normal_phone(phone)) is not None:
            self.phones.add(p)

    def add_lead(self, lead: Any) -> None:
        if isinstance(lead, dict):
            for key, value in lead.items():
                lowered = str(key).lower()
                if "mail" in lowered:
                    self.add(email=value)
                elif any(word in lowered for word in ("phone", "mobile", "cell", "tel", "whatsapp")):
                    self.add(phone=value)
                elif isinstance(value, dict | list):
                    self.add_lead(value)
        elif isinstance(lead, list):
            for item in lead:
                self.add_lead(item)

    def patterns(self) -> list[re.Pattern[str]]:
        found = [_phone_pattern(p) for p in sorted(self.phones)]
        for email in sorted(self.emails):
            variants = {email, quote(email, safe=""), quote(email, safe="@")}
            found.append(re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)),
                                    re.IGNORECASE))
        return found


class Scrubber:
    def __init__(self, person: Person):
        self._patterns = person.patterns()

    def text(self, value: str) -> str:
        for pattern in self._patterns:
            value = pattern.sub(MARKER, value)
        return PHONE.sub(MARKER, EMAIL.sub(MARKER, value))

    def document(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (MARKER if str(k).lower() in PERSONAL_KEYS and v not in (None, "") else self.document(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.document(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def lead_json(self, text: str) -> str:
        try:
            return json.dumps(self.document(json.loads(text)), separators=(",", ":"))
        except ValueError:
            return self.text(text)

    def body(self, data: bytes | None) -> bytes | None:
        if data is None:
            return None
        raw = bytes(data)
        try:
            return json.dumps(self.document(json.loads(raw)), separators=(",", ":")).encode()
        except ValueError:
            return self.text(raw.decode("utf-8", "replace")).encode()

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)


def scrubber_for(leads: Iterable[Any], person: Person | None = None) -> Scrubber:
    """A scrubber for `person` plus every email and phone the given lead documents hold."""
    person = person or Person()
    for lead in leads:
        person.add_lead(lead)
    return Scrubber(person)
