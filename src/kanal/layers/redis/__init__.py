"""The Redis (or Valkey) channel layer: ``redis://``, ``rediss://``, ``redis+sentinel://``.

Needs the ``redis`` extra (``pip install 'kanal[redis]'``: redis-py with hiredis, and
cryptography for encrypted messages).
"""

from kanal.layers.redis._crypto import EncryptedCodec
from kanal.layers.redis._layer import RedisChannelLayer

__all__ = ["EncryptedCodec", "RedisChannelLayer"]
