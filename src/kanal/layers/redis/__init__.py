"""The Redis (or Valkey) channel layer: ``redis://``, ``rediss://``, ``redis+sentinel://``.

Needs the ``redis`` extra (``pip install 'kanal[redis]'``: redis-py with hiredis, and
cryptography for encrypted messages); without it, importing this package raises
:class:`~kanal.exceptions.MissingDependency`.
"""

from kanal.exceptions import MissingDependency

# The packages the redis extra installs, by their import names.
_EXTRA_PACKAGES = frozenset({"redis", "hiredis", "cryptography"})

try:
    from kanal.layers.redis._crypto import EncryptedCodec
    from kanal.layers.redis._layer import RedisChannelLayer
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] not in _EXTRA_PACKAGES:
        raise
    raise MissingDependency(
        f"kanal.layers.redis needs the redis extra: pip install 'kanal[redis]' "
        f"(no module named {exc.name!r})",
        extra="redis",
        name=exc.name,
    ) from exc

__all__ = ["EncryptedCodec", "RedisChannelLayer"]
