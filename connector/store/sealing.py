"""Encryption at rest of what the store keeps about a person: events' raw bodies and leads.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) through MultiFernet: the first key of
`privacy.encryption_keys` encrypts, every key decrypts, and `MultiFernet.rotate` re-encrypts
under the first (`connector db rotate-key`). A sealed value carries the prefix `fernet:`, so
rows written before encryption was turned on (plain JSON) are still read, and sealed on rotation.
Without keys, values are stored and read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "fernet:"
BYTES_PREFIX = PREFIX.encode()
SETTING = "privacy.encryption_keys"


class SealError(Exception):
    """A stored value this process cannot read: sealed under a key it does not have (or no key at all)."""


class Sealer:
    def __init__(self, keys: Sequence[str] = ()):
        self.keys = [k for k in keys if k]
        self._fernet = None
        if self.keys:
            from cryptography.fernet import Fernet, MultiFernet

            self._fernet = MultiFernet([Fernet(k.encode()) for k in self.keys])

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    # --- text (events.lead_json) -------------------------------------------------------------
    def seal_text(self, text: str) -> str:
        if self._fernet is None:
            return text
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def open_text(self, text: str, what: str = "a stored value") -> str:
        if not text.startswith(PREFIX):
            return text
        return self._open(text[len(PREFIX):].encode(), what).decode()

    # --- bytes (events.body) -----------------------------------------------------------------
    def seal_bytes(self, data: bytes | None) -> bytes | None:
        if self._fernet is None or data is None:
            return data
        return BYTES_PREFIX + self._fernet.encrypt(data)

    def open_bytes(self, data: bytes | None, what: str = "a stored value") -> bytes | None:
        if data is None:
            return None
        data = bytes(data)  # PostgreSQL's driver gives a memoryview
        if not data.startswith(BYTES_PREFIX):
            return data
        return self._open(data[len(BYTES_PREFIX):], what)

    def _open(self, token: bytes, what: str) -> bytes:
        if self._fernet is None:
            raise SealError(f"{what} is encrypted but {SETTING} is empty: set the key it was written with")
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SealError(f"{what} was encrypted with a key that is not in {SETTING}: add the key it was "
                            "written with (keep old keys after the first while rotating)") from None

    # --- rotation ----------------------------------------------------------------------------
    def reseal_text(self, text: str) -> str:
        """Under the first key: a sealed value rotated, a plain one sealed."""
        if not text.startswith(PREFIX):
            return self.seal_text(text)
        assert self._fernet is not None
        self.open_text(text)  # a clear error for an unknown key before rotate's bare InvalidToken
        return PREFIX + self._fernet.rotate(text[len(PREFIX):].encode()).decode()

    def reseal_bytes(self, data: bytes | None) -> bytes | None:
        if data is None:
            return None
        data = bytes(data)
        if not data.startswith(BYTES_PREFIX):
            return self.seal_bytes(data)
        assert self._fernet is not None
        self.open_bytes(data)
        return BYTES_PREFIX + self._fernet.rotate(data[len(BYTES_PREFIX):])
