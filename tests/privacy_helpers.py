"""Shared by the privacy tests: a config with a `privacy:` block, and a full dump of the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from connector.store import Store
from connector.store.sealing import Sealer
from tests.conftest import write_config

# One person, every spelling of their phone the connector normalises, and their email in other cases.
EMAIL = "thabo.m@gmail.com"
PHONES = ["+27823456789", "+27 82 345 6789", "0823456789", "082 345 6789", "082-345-6789", "(082) 345 6789",
          "0027823456789", "27823456789", "+27-82-345-6789", "823456789"]
OTHER_EMAIL, OTHER_PHONE = "lerato@example.co.za", "+27715550000"


def privacy_config(tmp_path: Path, database_url: str, privacy: dict[str, Any], **kw: Any) -> Path:
    path = write_config(tmp_path, database_url, **kw)
    document = yaml.safe_load(path.read_text())
    document["privacy"] = privacy
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def dump(store: Store, keys: list[str] | None = None) -> str:
    """Every table, every column, as stored and (where sealed) decrypted with `keys`."""
    sealer = Sealer(keys or [])
    out: list[str] = []
    meta = sa.MetaData()
    meta.reflect(store.engine)
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        out.append(raw.decode("utf-8", "replace"))
                        if sealer.enabled:
                            out.append((sealer.open_bytes(raw) or b"").decode("utf-8", "replace"))
                    elif isinstance(value, str):
                        out.append(value)
                        if sealer.enabled:
                            out.append(sealer.open_text(value))
                    elif value is not None:
                        out.append(str(value))
    return "\n".join(out)


def person_in(text: str, email: str = EMAIL, phones: list[str] = PHONES) -> list[str]:
    """The person's values found in `text` (an empty list: none)."""
    lowered = text.lower()
    return [v for v in [email.lower(), *phones] if v.lower() in lowered]
