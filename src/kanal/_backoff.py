"""Retry delays that grow to a ceiling: the one backoff of every retry loop in kanal.

Depends on nothing else in kanal, so that every package may use it.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays between retries: ``first``, then ``factor`` times more each time, at most
    ``ceiling``; :meth:`reset` (after a success) starts again from ``first``.

    ``jitter`` (from 0 to 1) takes up to that fraction off each delay at random, so that
    many clients that lost the same server do not all come back at the same instant.

    >>> backoff = Backoff(0.05, 1.0)
    >>> [backoff.next() for _ in range(6)]
    [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    """

    __slots__ = ("_delay", "ceiling", "factor", "first", "jitter")

    def __init__(
        self, first: float, ceiling: float, *, factor: float = 2.0, jitter: float = 0.0
    ) -> None:
        if not 0 < first <= ceiling:
            raise ValueError(f"need 0 < first <= ceiling, not {first!r} and {ceiling!r}")
        if factor < 1:
            raise ValueError(f"factor must be at least 1, not {factor!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {jitter!r}")
        self.first = first
        self.ceiling = ceiling
        self.factor = factor
        self.jitter = jitter
        self._delay = first

    def next(self) -> float:
        """The delay to wait before the next retry (each call grows the one after)."""
        delay = self._delay
        self._delay = min(delay * self.factor, self.ceiling)
        if self.jitter:
            delay -= delay * self.jitter * random.random()
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (the operation succeeded)."""
        self._delay = self.first
