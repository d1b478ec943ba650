"""kanal._backoff.Backoff: the delays of every retry loop."""

from __future__ import annotations

import pytest

from kanal._backoff import Backoff


def test_delays_double_up_to_the_ceiling_and_reset_starts_again() -> None:
    backoff = Backoff(0.05, 1.0)
    assert [backoff.next() for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.05


def test_jitter_takes_off_at_most_its_fraction() -> None:
    backoff = Backoff(1.0, 1.0, jitter=0.25)
    delays = [backoff.next() for _ in range(200)]
    assert all(0.75 <= delay <= 1.0 for delay in delays)
    assert len(set(delays)) > 1  # not the same every time


@pytest.mark.parametrize(
    ("first", "ceiling", "options"),
    [(0, 1, {}), (2, 1, {}), (0.1, 1, {"factor": 0.5}), (0.1, 1, {"jitter": 1.5})],
)
def test_nonsense_is_refused(first: float, ceiling: float, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(first, ceiling, **options)
