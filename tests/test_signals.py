"""``kanal._signals``: SIGTERM and SIGINT really delivered, and the old handlers restored."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from kanal._signals import handling_signals


async def test_in_an_event_loop_the_handler_gets_each_signal(signal_fallbacks: list[int]) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    got: asyncio.Queue[signal.Signals] = asyncio.Queue()
    with handling_signals(got.put_nowait):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            async with asyncio.timeout(5):
                assert await got.get() == sig
    assert signal_fallbacks == []  # none went past the handler
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_outside_an_event_loop_the_handler_is_a_plain_signal_handler(
    signal_fallbacks: list[int],
) -> None:
    before = signal.getsignal(signal.SIGINT)
    got: list[signal.Signals] = []
    seen = threading.Event()

    def handler(sig: signal.Signals) -> None:
        got.append(sig)
        seen.set()

    with handling_signals(handler):
        os.kill(os.getpid(), signal.SIGINT)
        assert seen.wait(5)  # the wait is interrupted to run the handler
    assert got == [signal.SIGINT]
    assert signal_fallbacks == []
    assert signal.getsignal(signal.SIGINT) is before


def test_other_signals_and_threads() -> None:
    got: list[signal.Signals] = []
    before, before_hup = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    with handling_signals(got.append, signals=[signal.SIGHUP]):
        assert signal.getsignal(signal.SIGTERM) is before  # only the signals asked for
        assert signal.getsignal(signal.SIGHUP) is not before_hup
    assert signal.getsignal(signal.SIGHUP) is before_hup

    # A thread cannot handle signals: nothing is installed, the block runs all the same.
    ran: list[str] = []

    def in_a_thread() -> None:
        async def with_a_loop() -> None:
            with handling_signals(got.append):
                ran.append("loop")

        with handling_signals(got.append):
            ran.append("plain")
        asyncio.run(with_a_loop())

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join(10)
    assert ran == ["plain", "loop"]
    assert signal.getsignal(signal.SIGTERM) is before
