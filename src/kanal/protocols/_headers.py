"""The rules for a header field the application asks the server to send (RFC 9110 §5).

One check, used wherever application headers reach the wire: the HTTP response head, the
WebSocket 101 and the WebSocket denial response. A header that breaks the rules raises
:class:`~kanal.exceptions.InvalidHeader` before anything is written, so a name or value
holding CR or LF can never add header lines of its own (response splitting) and a NUL or
other control byte never reaches a client or proxy that would misread it.
"""

from __future__ import annotations

import re
from typing import Final

from kanal.exceptions import InvalidHeader

__all__ = ["check_header"]

# RFC 9110 §5.1: field-name = token; §5.6.2: token = 1*tchar,
# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
# / "~" / DIGIT / ALPHA. This leaves out ":", whitespace, CR, LF, NUL and every byte >= 0x80.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# RFC 9110 §5.5: field-value = *field-content, made of field-vchar (VCHAR, %x21-7E, and
# obs-text, %x80-FF) with SP and HTAB between them. Forbidden are CR, LF, NUL, the other
# controls %x00-1F except HTAB, and DEL (%x7F). Leading or trailing SP/HTAB are let through,
# as websockets, uvicorn and gunicorn do (h11 refuses them): on the wire they are the OWS
# around the value that RFC 9112 §5.1 allows and every recipient strips, so the field line
# stays valid and nothing can be injected with them.
_FIELD_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

# Most responses repeat the same few names (content-type, content-length, set-cookie...):
# a name seen valid is not matched again. Bounded, because an application may make names up.
_valid_names: set[bytes] = set()
_MAX_REMEMBERED = 512


def _shown(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 80 else text[:77] + "..."


def check_header(name: bytes, value: bytes) -> None:
    """Raise :class:`~kanal.exceptions.InvalidHeader` unless ``name: value`` may be sent.

    ``name`` must be an RFC 9110 token and ``value`` a field value: bytes, with no CR, LF,
    NUL or other control character but HTAB.
    """
    if type(name) is not bytes or name not in _valid_names:
        if not isinstance(name, bytes) or _TOKEN.fullmatch(name) is None:
            raise InvalidHeader(
                f"invalid header name {_shown(name)}: a header name must be bytes forming an "
                "RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)",
                name=name,
                value=value,
            )
        if len(_valid_names) < _MAX_REMEMBERED:
            _valid_names.add(bytes(name))
    if not isinstance(value, bytes) or _FIELD_VALUE.fullmatch(value) is None:
        raise InvalidHeader(
            f"invalid value for header {_shown(name)}: {_shown(value)}: a header value must "
            "be bytes without CR, LF, NUL or other control characters (RFC 9110 §5.5)",
            name=name,
            value=value,
        )
