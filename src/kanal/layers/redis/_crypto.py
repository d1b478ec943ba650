"""Encrypted message bodies: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from kanal.exceptions import ConfigError, InvalidMessage
from kanal.layers._codec import DEFAULT_MAX_MESSAGE_SIZE, MessageCodec

__all__ = ["EncryptedCodec"]


def fernet_key(secret: str | bytes) -> bytes:
    """A Fernet key derived from any secret string, the way channels_redis derives it.

    SHA-256 of the secret, URL-safe base64: the same secrets give the same keys, so a
    project moving from channels_redis keeps its configured keys.
    """
    raw = secret.encode() if isinstance(secret, str) else secret
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


class EncryptedCodec(MessageCodec):
    """The msgpack codec with every serialised message encrypted and authenticated.

    ``keys[0]`` encrypts; every key decrypts, so keys rotate without losing messages in
    flight: put the new key first, keep the old one until the longest expiry has passed,
    then remove it. ``max_message_size`` applies to the message before encryption.
    """

    def __init__(
        self, keys: Sequence[str | bytes], max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        super().__init__(max_message_size)
        if isinstance(keys, (str, bytes)) or not keys:
            raise ConfigError(
                "symmetric_encryption_keys must be a non-empty list of secrets "
                f"(the first encrypts), not {keys!r:.40}"
            )
        for key in keys:
            if not isinstance(key, (str, bytes)) or not key:
                raise ConfigError(
                    f"an encryption key must be a non-empty str or bytes, not {key!r:.20}"
                )
        self._fernet = MultiFernet([Fernet(fernet_key(key)) for key in keys])

    def seal(self, data: bytes) -> bytes:
        """Encrypt ``data`` with the first key."""
        return self._fernet.encrypt(data)

    def open(self, data: bytes) -> bytes:
        """Decrypt ``data`` with whichever configured key made it."""
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise InvalidMessage(
                "a received message cannot be decrypted with any configured key "
                "(symmetric_encryption_keys differ between sender and receiver?)"
            ) from None
