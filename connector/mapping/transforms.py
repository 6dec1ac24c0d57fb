"""Named transforms a mapping can apply to a value, e.g. `transforms: [trim, e164]`.

Each takes the value (and an optional argument) and returns the new value, or None when the
value is empty. A value that cannot be used (an invalid phone number) raises `Unusable`: the
mapping leaves that field empty, rather than losing the lead, and says why in `mappings preview`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import phonenumbers

from connector.timeutil import parse_iso


@dataclass(frozen=True)
class Transform:
    func: Callable[..., Any]
    arg: type | None = None  # the type of its argument, if it takes one
    help: str = ""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class Unusable(ValueError):
    """A value a transform cannot turn into anything a CRM should hold: the field is left empty,
    and `reason` is what `connector mappings preview` tells the admin. The reason never repeats the
    value itself, so it can go anywhere a message goes without carrying personal data."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


DEFAULT_REGION = "ZA"
_TRUNK_IN_BRACKETS = re.compile(r"^(\+\d{1,3})\s*\(0\)")  # +27 (0) 82 ...: the trunk 0 written by habit


def e164(value: Any) -> str | None:
    """A phone number phonenumbers calls *valid* -> E.164; South African unless it says otherwise.

    Any usual spelling parses: spaces (also non-breaking), brackets, dashes, `0027`, `+27 (0)`.
    A foreign number that is valid in its own country keeps its own country code. Anything not
    valid (too short, too long, an unassigned range) raises `Unusable`: the field stays empty
    rather than holding a number nobody can dial.
    """
    if value in (None, ""):
        return None
    raw = unicodedata.normalize("NFKC", str(value)).strip()  # NBSP -> space, full-width digits -> 0-9
    if not raw:
        return None
    text = _TRUNK_IN_BRACKETS.sub(r"\1 ", raw)
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise Unusable("not a phone number") from None
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_country_code(number.country_code)
    if region in (None, phonenumbers.UNKNOWN_REGION):
        raise Unusable(f"+{number.country_code} is not a country code in use")
    if region == DEFAULT_REGION:
        raise Unusable("not a valid South African number (10 digits from 0, e.g. 082 345 6789, or +27 and "
                       "9 digits)")
    raise Unusable(f"not a valid number for {region} (+{number.country_code})")


# --- names -------------------------------------------------------------------------------------
PARTICLES = frozenset({"van", "der", "den", "de", "du", "le", "la", "von", "zu", "da", "das", "dos", "di", "del",
                       "della", "ter", "ten", "te", "op", "het", "'t", "bin", "binti", "ibn", "al", "el"})


def _cap(word: str) -> str:
    """`o'neil` -> `O'Neil`, `mcdonald` -> `McDonald`, `smith-jones` -> `Smith-Jones`."""
    parts = re.split(r"([-'’.])", word)
    out = []
    for part in parts:
        if part in ("-", "'", "’", ".") or not part:
            out.append(part)
        elif part.lower().startswith("mc") and len(part) > 2:
            out.append("Mc" + part[2:3].upper() + part[3:].lower())
        else:
            out.append(part[:1].upper() + part[1:].lower())
    return "".join(out)


def name_case(value: Any) -> Any:
    """Capitalise a name typed all in lower or all in upper case; leave any other name as it is.

    `thabo van der merwe` -> `Thabo van der Merwe`, `JOHN MCDONALD` -> `John McDonald`. Particles
    (van, der, de, du, le, von, ...) stay lower case (`van der merwe` -> `van der Merwe`); words of one or two
    letters in an all-capitals name are kept as initials (`JP`). A name with any mix of cases
    (`McDonald`, `van der Merwe`, `JP`) is how the person wrote it, and is not touched.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or not (text.islower() or text.isupper()):
        return text
    upper = text.isupper()
    words = text.split(" ")
    only_particles = all(w.lower() in PARTICLES for w in words if w)
    out = []
    for word in words:
        letters = sum(ch.isalpha() for ch in word)
        if upper and letters <= 2 and word.replace(".", "").isalpha():
            out.append(word)  # initials: JP, J.P.
        elif word.lower() in PARTICLES and not only_particles:
            out.append(word.lower())
        else:
            out.append(_cap(word))
    return " ".join(out)


# --- budgets -----------------------------------------------------------------------------------
_AMOUNT = re.compile(
    r"(?P<number>\d{1,3}(?:[ ,\u00a0\u202f]\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?)\s*"
    r"(?P<suffix>thousand|million|mil|bn|k|m)?(?![a-z])", re.IGNORECASE)
_MULTIPLIER = {"k": 1_000, "thousand": 1_000, "m": 1_000_000, "mil": 1_000_000, "million": 1_000_000,
               "bn": 1_000_000_000}
_UP_TO = re.compile(r"\b(under|below|less than|up to|upto|max(imum)?|at most|not more than)\b|^\s*[<≤]"
                    r"|\b(or|and) (less|below|under)\b", re.IGNORECASE)
_AT_LEAST = re.compile(r"\+|\b(over|above|more than|from|min(imum)?|at least|plus)\b|^\s*[>≥]"
                       r"|\b(or|and) (more|above|over|up)\b", re.IGNORECASE)


def _amounts(text: str) -> list[tuple[Decimal, bool]]:
    """Each amount in Rand, and whether it had its own k/m suffix."""
    found = []
    for match in _AMOUNT.finditer(text):
        number = match["number"]
        if re.fullmatch(r"\d+,\d{1,2}", number):  # R1,5m: a decimal comma
            number = number.replace(",", ".")
        number = re.sub(r"[ ,\u00a0\u202f]", "", number)
        suffix = (match["suffix"] or "").lower()
        found.append((Decimal(number) * _MULTIPLIER.get(suffix, 1), bool(suffix)))
    return found


def _plain(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def budget_bounds(value: Any) -> tuple[int | float | None, int | float | None]:
    """A budget as the marketplaces write it -> (lowest, highest) in Rand; an open end is None.

    `R100,000–R150,000`, `R100 000 - R150 000`, `R100k-R150k` -> (100000, 150000); `R1.5m` ->
    (1500000, 1500000); `R1m+`, `R2,000,000+`, `Over R1m` -> (1000000 / 2000000, None);
    `Under R50,000` -> (None, 50000): nobody said the budget could be R0, so the lower end is
    unknown, not zero. `Not sure`, empty or missing -> (None, None).
    """
    if value in (None, ""):
        return None, None
    text = unicodedata.normalize("NFKC", str(value)).strip()
    amounts = _amounts(text)
    if not amounts:
        return None, None
    if len(amounts) >= 2:
        (low, low_suffixed), (high, high_suffixed) = amounts[0], amounts[1]
        if not low_suffixed and high_suffixed:  # R100-150k: the suffix belongs to both
            multiplier = next(m for s, m in _MULTIPLIER.items()
                              if re.search(rf"\d\s*{s}(?![a-z])", text, re.IGNORECASE))
            if low * multiplier <= high:
                low *= multiplier
        return _plain(min(low, high)), _plain(max(low, high))
    amount = _plain(amounts[0][0])
    if _UP_TO.search(text):
        return None, amount
    if _AT_LEAST.search(text):
        return amount, None
    return amount, amount


def date_format(value: Any, fmt: str) -> Any:
    """ISO timestamps -> `fmt` (strftime), or `epoch_ms` / `date_epoch_ms` for HubSpot."""
    if value in (None, ""):
        return None
    epoch = parse_iso(str(value))
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    if fmt == "epoch_ms":
        return int(epoch * 1000)
    if fmt == "date_epoch_ms":
        return int(datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() * 1000)
    if fmt == "iso":
        return moment.isoformat().replace("+00:00", "Z")
    return moment.strftime(fmt)


def number(value: Any) -> float | int | None:
    if value in (None, ""):
        return None
    try:
        result = float(str(value).replace(",", "").replace(" ", ""))
    except ValueError:
        return None
    return int(result) if result.is_integer() else result


def truncate(value: Any, length: int) -> str | None:
    """At most `length` characters (Salesforce counts characters, not bytes: `é` or `ŋ` is one),
    never cutting an accent or a joiner off the letter it belongs to."""
    text = _text(value)
    if text is None or len(text) <= length:
        return text
    cut = length
    while cut > 0 and (unicodedata.combining(text[cut]) or text[cut] in "\u200d\ufe0f"):
        cut -= 1
    return text[:cut].rstrip()


TRANSFORMS: dict[str, Transform] = {
    "trim": Transform(lambda v: (v.strip() or None) if isinstance(v, str) else v,
                      help="remove surrounding spaces (also non-breaking); blank text becomes empty, so it is "
                           "not written"),
    "lower": Transform(lambda v: v.lower() if isinstance(v, str) else v, help="lower case"),
    "upper": Transform(lambda v: v.upper() if isinstance(v, str) else v, help="upper case"),
    "title": Transform(lambda v: v.title() if isinstance(v, str) else v,
                       help="Title Case every word (for names use name_case: title makes JP Jp)"),
    "name_case": Transform(name_case, help="capitalise a name typed all lower or all upper case, keeping "
                                           "particles (van der Merwe) and initials (JP); other names as sent"),
    "e164": Transform(e164, help="a valid phone number to E.164 (+27823456789), South African unless it has "
                                 "a country code; an invalid number leaves the field empty"),
    "truncate": Transform(truncate, int, help="cut text to N characters: `truncate: 40`"),
    "budget_min": Transform(lambda v: budget_bounds(v)[0], help="lower bound of a budget range, as a number"),
    "budget_max": Transform(lambda v: budget_bounds(v)[1], help="upper bound of a budget range, as a number"),
    "date": Transform(date_format, str,
                      help="format a timestamp: `date: \"%Y-%m-%d\"`, `date: iso`, `date: epoch_ms`, "
                           "`date: date_epoch_ms`"),
    "number": Transform(number, help="text to a number (`1,200` -> 1200); empty when not a number"),
    "string": Transform(_text, help="any value to text"),
}
