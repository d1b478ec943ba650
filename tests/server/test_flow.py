"""FlowControl on its own: reasons to pause reading add up, drain waits for the transport."""

from __future__ import annotations

import asyncio

from kanal.server import ServerStats
from kanal.server._flow import PAUSE_APP, PAUSE_HANDSHAKE, PAUSE_PEER, FlowControl


class FakeTransport:
    """Records what flow control asks of a transport (a real one needs a socket)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.high = 0

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def flow_control() -> tuple[FlowControl, FakeTransport, ServerStats]:
    transport = FakeTransport()
    stats = ServerStats()
    flow = FlowControl(transport, asyncio.get_running_loop(), stats, 4096)  # type: ignore[arg-type]
    return flow, transport, stats


async def test_reading_resumes_only_when_no_reason_is_left() -> None:
    flow, transport, stats = flow_control()
    assert transport.high == 4096
    assert flow.pause_reading(PAUSE_HANDSHAKE)
    assert flow.pause_reading(PAUSE_APP)
    assert not flow.pause_reading(PAUSE_APP)  # already paused for it: not counted twice
    flow.resume_reading(PAUSE_HANDSHAKE)
    assert flow.read_paused and flow.paused_for(PAUSE_APP)
    flow.resume_reading(PAUSE_PEER)  # never paused for it: nothing happens
    flow.resume_reading(PAUSE_APP)
    assert not flow.read_paused
    assert transport.calls == ["pause", "resume"]  # one pause, one resume of the socket
    assert (stats.read_pauses_handshake, stats.read_pauses_app, stats.read_pauses_peer) == (1, 1, 0)


async def test_drain_waits_for_resume_writing_or_the_connection_lost() -> None:
    flow, transport, stats = flow_control()
    await asyncio.wait_for(flow.drain(), 1)  # not paused: returns at once
    flow.pause_writing()
    flow.pause_writing()
    assert stats.write_pauses == 1
    waiting = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    flow.resume_writing()
    await asyncio.wait_for(waiting, 1)
    flow.pause_writing()
    waiting = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    flow.connection_lost()
    await asyncio.wait_for(waiting, 1)
    flow.pause_reading(PAUSE_APP)
    assert transport.calls == []  # the transport is gone: not touched any more
