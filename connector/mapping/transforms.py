"""Named transforms a mapping can apply to a value, e.g. `transforms: [trim, e164]`.

Each takes the value (and an optional argument) and returns the new value, or None when the
value cannot be read (an unreadable phone number leaves the field empty rather than losing the lead).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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


def e164(value: Any) -> str | None:
    """South African numbers in any usual spelling -> +27XXXXXXXXX."""
    if value in (None, ""):
        return None
    raw = str(value).strip()
    digits = re.sub(r"\D", "", raw)
    if not raw.startswith("+") and digits.startswith("27") and len(digits) == 11:
        raw = "+" + digits
    elif raw.startswith("00"):
        raw = "+" + digits[2:]
    try:
        number = phonenumbers.parse(raw, "ZA")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_AMOUNT = re.compile(r"R?\s*(\d[\d,\s]*(?:\.\d+)?)\s*([kKmM](?:il(?:lion)?)?|bn)?")
_MULTIPLIER = {"k": 1_000, "m": 1_000_000, "bn": 1_000_000_000}


def _amounts(text: str) -> list[float]:
    out = []
    for number, suffix in _AMOUNT.findall(text):
        cleaned = re.sub(r"[,\s]", "", number)
        if not cleaned:
            continue
        amount = float(cleaned) * _MULTIPLIER.get((suffix or "")[:1].lower() if suffix != "bn" else "bn", 1)
        out.append(int(amount) if amount.is_integer() else amount)
    return out


def budget_bounds(value: Any) -> tuple[float | None, float | None]:
    """`R100,000–R150,000` -> (100000, 150000); `R1m+` -> (1000000, None); `Under R50,000` -> (0, 50000)."""
    if value in (None, ""):
        return None, None
    text = str(value).strip()
    amounts = _amounts(text)
    if not amounts:
        return None, None
    lowered = text.lower()
    if re.search(r"\b(under|below|less than|up to|max(imum)?)\b|^<", lowered):
        return 0, amounts[0]
    if text.endswith("+") or re.search(r"\b(over|above|more than|from|min(imum)?|plus)\b|^>", lowered):
        return amounts[0], None
    if len(amounts) >= 2:
        return min(amounts[0], amounts[1]), max(amounts[0], amounts[1])
    return amounts[0], amounts[0]


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
    text = _text(value)
    return text if text is None else text[:length]


TRANSFORMS: dict[str, Transform] = {
    "trim": Transform(lambda v: v.strip() if isinstance(v, str) else v, help="remove surrounding spaces"),
    "lower": Transform(lambda v: v.lower() if isinstance(v, str) else v, help="lower case"),
    "upper": Transform(lambda v: v.upper() if isinstance(v, str) else v, help="upper case"),
    "title": Transform(lambda v: v.title() if isinstance(v, str) else v, help="Title Case"),
    "e164": Transform(e164, help="phone number to E.164 (+27823456789); South African by default"),
    "truncate": Transform(truncate, int, help="cut text to N characters: `truncate: 40`"),
    "budget_min": Transform(lambda v: budget_bounds(v)[0], help="lower bound of a budget range, as a number"),
    "budget_max": Transform(lambda v: budget_bounds(v)[1], help="upper bound of a budget range, as a number"),
    "date": Transform(date_format, str,
                      help="format a timestamp: `date: \"%Y-%m-%d\"`, `date: iso`, `date: epoch_ms`, "
                           "`date: date_epoch_ms`"),
    "number": Transform(number, help="text to a number (`1,200` -> 1200); empty when not a number"),
    "string": Transform(_text, help="any value to text"),
}
