"""Routing by URL path: ``path()`` patterns with typed converters, ``re_path()`` regexes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kanal.routing._protocol import reject_scope
from kanal.typing import ASGIApp, Receive, Scope, Send

__all__ = [
    "Converter",
    "IntConverter",
    "PathConverter",
    "Route",
    "SlugConverter",
    "StrConverter",
    "URLRouter",
    "UUIDConverter",
    "path",
    "re_path",
    "register_converter",
]


class Converter:
    """Turns one ``<name:param>`` segment into a Python value.

    Subclasses set ``regex`` and override :meth:`to_python`; raising ``ValueError`` there
    means "this route does not match", as in Django.
    """

    regex: ClassVar[str] = "[^/]+"

    def to_python(self, value: str) -> Any:
        """The value passed to the consumer in ``scope["url_route"]["kwargs"]``."""
        return value


class StrConverter(Converter):
    """Any non-empty text without a slash (the default)."""


class IntConverter(Converter):
    """A non-negative decimal integer, passed as ``int``."""

    regex = "[0-9]+"

    def to_python(self, value: str) -> int:
        """The integer."""
        return int(value)


class SlugConverter(Converter):
    """ASCII letters, digits, hyphens and underscores."""

    regex = "[-a-zA-Z0-9_]+"


class UUIDConverter(Converter):
    """A lower-case, hyphenated UUID, passed as :class:`uuid.UUID`."""

    regex = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        """The UUID."""
        return uuid.UUID(value)


class PathConverter(Converter):
    """Any non-empty text, slashes included (for the rest of a path)."""

    regex = ".+"


_CONVERTERS: dict[str, type[Converter]] = {
    "str": StrConverter,
    "int": IntConverter,
    "slug": SlugConverter,
    "uuid": UUIDConverter,
    "path": PathConverter,
}

_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def register_converter(converter: type[Converter], name: str) -> None:
    """Make ``<name:param>`` use ``converter`` in patterns compiled from now on."""
    if not (isinstance(converter, type) and issubclass(converter, Converter)):
        raise TypeError(f"register_converter needs a Converter subclass, not {converter!r}")
    _CONVERTERS[name] = converter


def _compile_path(route: str, *, prefix: bool) -> tuple[re.Pattern[str], dict[str, Converter]]:
    """``"chat/<int:room>/"`` -> a regex with named groups, and a converter per group."""
    parts = ["^"]
    converters: dict[str, Converter] = {}
    position = 0
    for match in _PARAMETER.finditer(route):
        parts.append(re.escape(route[position : match.start()]))
        name = match["name"]
        kind = match["converter"] or "str"
        if not name.isidentifier():
            raise ValueError(f"URL pattern {route!r}: {name!r} is not a valid parameter name")
        if name in converters:
            raise ValueError(f"URL pattern {route!r} uses the parameter {name!r} twice")
        converter_class = _CONVERTERS.get(kind)
        if converter_class is None:
            known = ", ".join(sorted(_CONVERTERS))
            raise ValueError(
                f"URL pattern {route!r} uses the unknown converter {kind!r} (known: {known}; "
                "add one with register_converter)"
            )
        converters[name] = converter_class()
        parts.append(f"(?P<{name}>{converter_class.regex})")
        position = match.end()
    parts.append(re.escape(route[position:]))
    if not prefix:
        parts.append(r"\Z")
    return re.compile("".join(parts)), converters


@dataclass
class Route:
    """One entry of a :class:`URLRouter`; build it with :func:`path` or :func:`re_path`."""

    pattern: str
    app: ASGIApp
    regex: re.Pattern[str]
    converters: dict[str, Converter] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    is_regex: bool = False

    def match(self, path: str) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
        """``(rest of the path, args, kwargs)`` if ``path`` matches, else ``None``."""
        found = self.regex.search(path) if self.is_regex else self.regex.match(path)
        if found is None:
            return None
        named = {key: value for key, value in found.groupdict().items() if value is not None}
        # Django's rule: positional groups count only when there are no named ones.
        args: tuple[Any, ...] = () if found.groupdict() else found.groups()
        kwargs: dict[str, Any] = {}
        for key, value in named.items():
            converter = self.converters.get(key)
            if converter is None:
                kwargs[key] = value
                continue
            try:
                kwargs[key] = converter.to_python(value)
            except ValueError:
                return None
        kwargs.update(self.kwargs)
        return path[found.end() :], args, kwargs


def _check_app(app: object, pattern: str) -> ASGIApp:
    if isinstance(app, type) and hasattr(app, "as_asgi"):
        raise TypeError(
            f"route {pattern!r} got the consumer class {app.__name__}; "
            f"pass {app.__name__}.as_asgi()"
        )
    if not callable(app):
        raise TypeError(f"route {pattern!r} needs an ASGI application, not {app!r}")
    return app


def path(
    route: str, app: ASGIApp, *, kwargs: Mapping[str, Any] | None = None, name: str | None = None
) -> Route:
    """A route with Django's syntax: ``path("rooms/<int:room_id>/", RoomConsumer.as_asgi())``.

    Converters: ``str`` (default), ``int``, ``slug``, ``uuid``, ``path``. A leading slash is
    optional. When ``app`` is a :class:`URLRouter` the pattern matches a prefix and the
    nested router matches the rest; otherwise it must match the whole path.
    """
    checked = _check_app(app, route)
    regex, converters = _compile_path(route.lstrip("/"), prefix=isinstance(app, URLRouter))
    return Route(route, checked, regex, converters, dict(kwargs or {}), name)


def re_path(
    regex: str, app: ASGIApp, *, kwargs: Mapping[str, Any] | None = None, name: str | None = None
) -> Route:
    """A route matched by a regular expression (named groups become kwargs, as strings).

    The path it is matched against has no leading slash, and the regex is searched as in
    Django, so anchor it with ``^`` and ``$`` when you mean the whole path.
    """
    checked = _check_app(app, regex)
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"route regex {regex!r} does not compile: {exc}") from None
    return Route(regex, checked, compiled, {}, dict(kwargs or {}), name, is_regex=True)


class URLRouter:
    """Send each ``http`` or ``websocket`` scope to the first route whose pattern matches.

    The match is stored in ``scope["url_route"] = {"args": (...), "kwargs": {...}}``, merged
    with the values of enclosing routers when nested. ``scope["root_path"]`` is removed from
    the start of the path before matching. No match: 404 for HTTP, a refused handshake for
    WebSocket, with a warning naming the path and the patterns tried.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        for route in self.routes:
            if not isinstance(route, Route):
                raise TypeError(
                    f"URLRouter needs routes made with path() or re_path(), not {route!r}"
                )

    def _path(self, scope: Scope) -> str:
        if "path_remaining" in scope:
            return str(scope["path_remaining"])
        full = str(scope.get("path", ""))
        root = str(scope.get("root_path", "")).rstrip("/")
        # Only a whole leading segment: root "/chat" is not a prefix of "/chatroom/".
        if root and (full == root or full.startswith(root + "/")):
            full = full[len(root) :]
        return full.lstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one connection."""
        target = self._path(scope)
        for route in self.routes:
            found = route.match(target)
            if found is None:
                continue
            rest, args, kwargs = found
            outer = scope.get("url_route") or {"args": (), "kwargs": {}}
            child: dict[str, Any] = dict(scope)
            child["url_route"] = {
                "args": tuple(outer.get("args", ())) + args,
                "kwargs": {**outer.get("kwargs", {}), **kwargs},
            }
            if isinstance(route.app, URLRouter):
                child["path_remaining"] = rest
            else:
                child.pop("path_remaining", None)
            await route.app(child, receive, send)
            return
        tried = ", ".join(repr(route.pattern) for route in self.routes) or "no routes"
        await reject_scope(scope, receive, send, f"no route matches {target!r} (tried {tried})")
