"""Logging: one line per event on stdout, JSON when not on a terminal, never a phone, email or secret."""

from __future__ import annotations

import logging
import re
import sys
import time
from json.encoder import encode_basestring

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# South African numbers in their usual spellings, and any international number written with a +.
PHONE = re.compile(r"(?<![\w.-])(?:\+\d[\d \-()]{7,16}\d|(?:27|0)\d{2}[ -]?\d{3}[ -]?\d{4})(?![\w-])")


def redact(text: str) -> str:
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


class RedactingFilter(logging.Filter):
    """Applied to every record, whichever logger wrote it (CRM error messages quote emails)."""

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
        if record.exc_text:
            line += f', "exception": {encode_basestring(record.exc_text)}'
        return line + "}"


def setup_logging(level: str = "INFO", json_lines: bool | None = None) -> None:
    # Our lines name no thread, process or source line: not collecting them makes each record cheaper
    # (the logging HOWTO's "Optimization" section), which counts on the webhook path.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
