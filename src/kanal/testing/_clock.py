"""A clock that moves only when a test says so, for testing expiry without waiting."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A clock for tests: calling it gives the time, :meth:`advance` moves it forward.

    Pass it where a layer takes a ``clock`` (``InMemoryChannelLayer(clock=clock)``): a
    minute of expiry then passes in one call, with nothing waiting for real time.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        #: The time this clock tells, in seconds.
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (never back: it stands for a monotonic one)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds!r} s)")
        self.now += seconds
