"""Logging: one line per event on stdout, JSON when not on a terminal, never a phone, email or secret."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from json.encoder import encode_basestring

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# South African numbers in their usual spellings, and any international number written with a +.
PHONE = re.compile(r"(?<![\w.-])(?:\+\d[\d \-()]{7,16}\d|(?:27|0)\d{2}[ -]?\d{3}[ -]?\d{4})(?![\w-])")


# What a line is about, as JSON keys beside the message (passed with `extra=`), so a log search can
# filter on a lead, an event or a destination without parsing the text.
FIELDS = ("source", "event_type", "event_id", "lead_id", "lead_key", "destination", "delivery_id", "outcome")

# Secrets shorter than this are refused at start-up; shorter configured values (e.g. an empty
# optional variable) are not looked for, or every "a" in every line would go.
MIN_REDACTED = 6


class Redactor:
    """Takes every configured secret value, email and phone number out of text that leaves the process
    (log lines, CLI output, /metrics) or is stored (last errors, pause reasons).

    Built from the loaded config (`Config.redactor`); `install()` makes it the one the log filter uses.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        values = {v for s in secrets for v in (s, s.strip()) if len(v) >= MIN_REDACTED}
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = re.compile("|".join(map(re.escape, sorted(values, key=len, reverse=True)))) \
            if values else None

    def __call__(self, text: str) -> str:
        return PHONE.sub("[phone]", EMAIL.sub("[email]", self.secrets(text)))

    def secrets(self, text: str) -> str:
        """Only the secrets: for text such as /metrics, whose numbers could look like phone numbers."""
        return self._secrets.sub("[secret]", text) if self._secrets is not None else text


_active = Redactor()


def install(redactor: Redactor) -> None:
    """Log lines from now on go through `redactor` (called when a config is loaded)."""
    global _active
    _active = redactor


def redact(text: str) -> str:
    return _active(text)


class RedactingFilter(logging.Filter):
    """Applied to every record, whichever logger wrote it (CRM error messages quote emails and tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Written out field by field with the json module's C string encoder:
    `json.dumps` builds an encoder per call, which on the webhook path cost more than the store's insert."""

    def __init__(self) -> None:
        super().__init__()
        self._stamp: tuple[int, str] = (-1, "")  # (second, its text), swapped whole: threads share the formatter

    def _time(self, created: float) -> str:
        second, text = self._stamp
        if int(created) != second:  # one strftime per second, not per line
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
            self._stamp = (second, text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        line = (f'{{"time": "{self._time(record.created)}", "level": "{record.levelname.lower()}", '
                f'"logger": {encode_basestring(record.name)}, "message": {encode_basestring(record.getMessage())}')
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line += f', "{name}": {value}' if isinstance(value, int) else \
                    f', "{name}": {encode_basestring(redact(str(value)))}'
        if record.exc_text:
            line += f', "exception": {encode_basestring(record.exc_text)}'
        return line + "}"


def setup_logging(level: str = "INFO", json_lines: bool | None = None) -> None:
    # Our lines name no source line: not collecting it makes each record cheaper (the logging HOWTO's
    # "Optimization" section). Threads and processes stay: other formats (gunicorn's `%(process)d`)
    # fail on a record without them, and every later line of theirs became "--- Logging error ---".
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stdout)
    use_json = (not sys.stdout.isatty()) if json_lines is None else json_lines
    handler.setFormatter(JsonFormatter() if use_json else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("werkzeug", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
