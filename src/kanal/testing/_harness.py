"""How the conformance suites turn ``async def test(self, layer)`` into a pytest test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from kanal.layers._base import BaseChannelLayer

__all__ = ["layer_test"]


class _Runs(Protocol):
    def run(
        self, body: Callable[[Any, BaseChannelLayer], Awaitable[None]], **options: Any
    ) -> None: ...


S = TypeVar("S", bound=_Runs)


def layer_test(
    **options: Any,
) -> Callable[[Callable[[S, BaseChannelLayer], Awaitable[None]]], Callable[[S], None]]:
    """Turn ``async def test(self, layer)`` into a plain pytest test method that runs it on
    a fresh layer made with ``options`` (see ``ChannelLayerConformance.run``)."""

    def decorate(body: Callable[[S, BaseChannelLayer], Awaitable[None]]) -> Callable[[S], None]:
        def test(self: S) -> None:
            self.run(body, **options)

        # Not functools.wraps: pytest would read the wrapped signature and look for a
        # fixture called "layer".
        test.__name__ = body.__name__
        test.__qualname__ = body.__qualname__
        test.__doc__ = body.__doc__
        return test

    return decorate
